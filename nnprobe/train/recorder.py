"""`nnprobe.Recorder`: the records, findings and reports of `train` for a training loop nnprobe does not own.

    with nnprobe.Recorder("runs/my-net", loss="bce") as rec:
        rec.data(X, y)
        for epoch in range(epochs):
            with rec.step() as s:
                s.layer("hidden", z=z1, a=a1, W=W1, b=b1, activation="relu")
                s.loss(cost, outputs=p, targets=y)
                s.grads("hidden", gW=dW1, gb=db1)
            if rec.stopped:
                break
    rec.result

The loop hands its tensors over as it makes them; each is summarised at once (a loop may write
into z later: that is evidence, see docs/recorder.md), so nothing is copied but the weights the
update ratio needs. The run directory, step log and live detectors are `train`'s own
(recorded_run.py); what this module adds is the interface and its misuse checks.
"""

from __future__ import annotations

import difflib
import math
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

import nnprobe
from nnprobe.errors import RecorderError
from nnprobe.probes import tensor_records as tr
from nnprobe.train.runlog import SCHEMA_VERSION

LOSS_KINDS = ("mse", "bce", "cross_entropy")
TASKS = ("regression", "classification")
TENSORS = ("z", "a", "W", "b")
GRADIENTS = ("gW", "gb")


def _array(value: Any, where: str) -> Optional[np.ndarray]:
    """A NumPy array of numbers, or None; anything else (a list, a tensor of another library) is misuse."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise RecorderError(
            f"{where}: expected a NumPy array, got {type(value).__name__}. Pass the array itself "
            "(np.asarray(...) turns a list into one)."
        )
    if value.dtype.kind not in "fiub":
        raise RecorderError(f"{where}: expected an array of numbers, got dtype {value.dtype}.")
    return value


def _choice(value: Optional[str], valid: tuple[str, ...], key: str) -> Optional[str]:
    if value is None or value in valid:
        return value
    hint = difflib.get_close_matches(str(value), valid, n=1)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise RecorderError(f"Recorder({key}={value!r}): unknown{did}; valid: {', '.join(valid)}, or None.")


@dataclass
class LayerGiven:
    """What one s.layer() (and s.grads()) call handed over in one step, summarised."""

    name: str
    activation: Optional[str]
    shapes: dict[str, tuple]
    z: Optional[np.ndarray] = None  # kept by reference until the step ends: the in-place check
    a: Optional[np.ndarray] = None
    W: Optional[np.ndarray] = None
    b: Optional[np.ndarray] = None
    gW: Optional[np.ndarray] = None
    gb: Optional[np.ndarray] = None
    stats: dict[str, Optional[dict]] = field(default_factory=dict)
    prints: dict[str, tr.Fingerprint] = field(default_factory=dict)
    finite: dict[str, bool] = field(default_factory=dict)
    grad_sq: float = 0.0
    rebound: Optional[tr.Update] = None  # the update seen when a loop hands a new W array over

    @property
    def given(self) -> set[str]:
        return {k for k in self.shapes}


class Step:
    """One step of the person's loop: `with rec.step() as s:` and the calls below, in forward order."""

    def __init__(self, recorder: "Recorder", index: int, full: bool) -> None:
        self._rec = recorder
        self.index = index
        self.full = full
        self._state = "new"  # new -> open -> closed
        self.layers: list[LayerGiven] = []
        self._by_name: dict[str, LayerGiven] = {}
        self.loss_value: Optional[float] = None
        self.loss_given = False
        self.loss_in: Optional[dict] = None
        self.loss_finite = True
        self.accuracy: Optional[float] = None
        self.grads_given: set[str] = set()
        self.outputs_given = False

    # -- the block

    def __enter__(self) -> "Step":
        if self._state != "new":
            raise RecorderError(
                f"step {self.index}: this step block was entered twice. Call rec.step() afresh for every step: "
                "`with rec.step() as s:` inside the loop."
            )
        self._rec._open(self)
        self._state = "open"
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._state = "closed"
        self._rec._close(self, exc)
        return False  # the person's own exception goes on unchanged

    def _check_open(self, call: str) -> None:
        if self._state != "open":
            raise RecorderError(f"s.{call}: outside its step block; call it inside `with rec.step() as s:`.")

    # -- what the loop hands over

    def layer(self, name: str, z=None, a=None, W=None, b=None, activation: Optional[str] = None) -> None:
        """One layer's forward tensors and parameters, in forward order, each summarised now."""
        self._check_open("layer")
        where = f"step {self.index}: s.layer({name!r})"
        if not isinstance(name, str) or not name:
            raise RecorderError(f"step {self.index}: s.layer(name): expected a non-empty string, got {name!r}.")
        if name in self._by_name:
            raise RecorderError(f"{where}: the layer was already given in this step; give each layer once.")
        if activation is not None and not isinstance(activation, str):
            raise RecorderError(f"{where}: activation: expected a name such as 'relu', got {activation!r}.")
        arrays = {k: _array(v, f"{where}, {k}=") for k, v in (("z", z), ("a", a), ("W", W), ("b", b))}
        shapes = {k: v.shape for k, v in arrays.items() if v is not None}
        given = LayerGiven(name, activation, shapes, **arrays)
        self._rec._layout.check_layer(self.index, len(self.layers), given)
        self.layers.append(given)
        self._by_name[name] = given
        self._rec._take_forward(self, given)

    def loss(self, value, outputs=None, targets=None) -> None:
        """The step's loss; `outputs`: what the loss took the log of (for the cross-entropy family)."""
        self._check_open("loss")
        where = f"step {self.index}: s.loss()"
        if self.loss_given:
            raise RecorderError(f"{where}: the loss was already given in this step; give it once.")
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(())[()]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise RecorderError(f"{where}: expected the loss as a number, got {type(value).__name__}.")
        outputs = _array(outputs, f"{where}, outputs=")
        targets = _array(targets, f"{where}, targets=")
        self.loss_given = True
        self._rec._take_loss(self, float(value), outputs, targets)

    def grads(self, name: str, gW=None, gb=None) -> None:
        """A declared layer's parameter gradients, summarised now (the loop may reuse the buffers)."""
        self._check_open("grads")
        where = f"step {self.index}: s.grads({name!r})"
        given = self._by_name.get(name)
        if given is None:
            declared = ", ".join(repr(l.name) for l in self.layers) or "none yet"
            raise RecorderError(
                f"{where}: no layer of that name was given in this step (declared: {declared}). Call "
                f"s.layer({name!r}, ...) in the forward pass first."
            )
        if name in self.grads_given:
            raise RecorderError(f"{where}: the gradients of this layer were already given in this step.")
        arrays = {"gW": _array(gW, f"{where}, gW="), "gb": _array(gb, f"{where}, gb=")}
        for k, v in arrays.items():
            if v is not None:
                given.shapes[k] = v.shape
        self._rec._layout.check_grads(self.index, given, arrays)
        self.grads_given.add(name)
        self._rec._take_grads(self, given, arrays["gW"], arrays["gb"])


@dataclass
class LayerSpec:
    name: str
    activation: Optional[str]
    shapes: dict[str, tuple]


def _same_shape(kind: str, first: tuple, now: tuple) -> bool:
    """z and a may change their first (batch) dimension, e.g. on the last minibatch; parameters may not."""
    if kind in ("z", "a"):
        return len(first) == len(now) and first[1:] == now[1:]
    return first == now


class Layout:
    """The layers of the first step, which every later step must repeat: names, order, tensors, shapes."""

    def __init__(self) -> None:
        self.specs: Optional[list[LayerSpec]] = None
        self._first: list[LayerSpec] = []

    def check_layer(self, step: int, i: int, given: LayerGiven) -> None:
        if self.specs is None:
            self._first.append(LayerSpec(given.name, given.activation, dict(given.shapes)))
            return
        where = f"step {step}: s.layer({given.name!r})"
        names = [s.name for s in self.specs]
        if i >= len(self.specs) or self.specs[i].name != given.name:
            expected = f"{self.specs[i].name!r}" if i < len(self.specs) else "no more layers"
            raise RecorderError(
                f"{where}: the first step gave the layers {names} in this order; at position {i + 1} it "
                f"expected {expected}. Give the same layers in the same (forward) order every step."
            )
        self._compare(where, self.specs[i], given.activation, given.shapes, TENSORS)

    def check_grads(self, step: int, given: LayerGiven, arrays: dict) -> None:
        if self.specs is None:
            spec = next(s for s in self._first if s.name == given.name)
            spec.shapes.update({k: v.shape for k, v in arrays.items() if v is not None})
            return
        spec = next(s for s in self.specs if s.name == given.name)
        shapes = {k: v.shape for k, v in arrays.items() if v is not None}
        self._compare(f"step {step}: s.grads({given.name!r})", spec, spec.activation, shapes, GRADIENTS)

    def _compare(self, where: str, spec: LayerSpec, activation, shapes: dict, kinds: tuple) -> None:
        if activation != spec.activation:
            raise RecorderError(f"{where}: activation={activation!r}, but the first step gave {spec.activation!r}.")
        first = {k for k in spec.shapes if k in kinds}
        if set(shapes) != first:
            raise RecorderError(
                f"{where}: given {sorted(shapes) or 'nothing'}, but the first step gave {sorted(first) or 'nothing'}. "
                "Give the same tensors every step (what the first step gives decides which detectors run)."
            )
        for k, shape in shapes.items():
            if not _same_shape(k, spec.shapes[k], shape):
                raise RecorderError(
                    f"{where}, {k}=: shape {shape}, but the first step gave {spec.shapes[k]}; a layer's shapes "
                    "may not change (only the batch dimension of z and a may)."
                )

    def close_step(self, step: int, layers: list[LayerGiven]) -> Optional[str]:
        """Fix the layout after the first step; afterwards, the problem with a step that gave too few layers."""
        if self.specs is None:
            self.specs = self._first
            return None
        if len(layers) < len(self.specs):
            missing = [s.name for s in self.specs[len(layers):]]
            return (f"step {step}: the layers {missing} were not given; the first step gave "
                    f"{[s.name for s in self.specs]}. Give the same layers every step.")
        return None


class Recorder:
    """Records a hand-written NumPy training loop into a run directory `nnprobe diagnose` and `report` read."""

    def __init__(self, out, loss: Optional[str] = None, task: Optional[str] = None, every: int = 1,
                 stop_on=("nonfinite",), name: Optional[str] = None) -> None:
        from nnprobe.diagnose.detectors import validate_codes

        if not isinstance(out, (str, Path)) or not str(out):
            raise RecorderError(f"Recorder(out={out!r}): expected a directory path such as 'runs/my-net'.")
        self.loss_kind = _choice(loss, LOSS_KINDS, "loss")
        self.task = _choice(task, TASKS, "task") or (
            None if loss is None else "regression" if loss == "mse" else "classification")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise RecorderError(f"Recorder(every={every!r}): expected a positive integer (1 = every step).")
        if isinstance(stop_on, str):
            stop_on = (stop_on,)
        try:
            stop_on = list(stop_on)
            validate_codes(stop_on, "Recorder(stop_on=)")
        except (TypeError, ValueError) as exc:
            raise RecorderError(str(exc) if isinstance(exc, ValueError) else
                                f"Recorder(stop_on={stop_on!r}): expected a list of finding codes.") from None
        if name is not None and (not isinstance(name, str) or not name):
            raise RecorderError(f"Recorder(name={name!r}): expected a non-empty string.")
        self.out = Path(out)
        self.every = every
        self.stop_on = stop_on
        self.name = name or self.out.name
        self.arguments = {"loss": loss, "task": task, "every": every, "stop_on": stop_on, "name": name}
        self.stopped = False
        self._layout = Layout()
        self._run = None  # recorded_run.RecordedRun while the block is open
        self._result = None
        self._step: Optional[Step] = None
        self._steps = 0
        self._data: Optional[dict] = None
        self._trackers: dict[str, tr.UpdateTracker] = {}
        self._previous_handler = None

    # -- the block

    def __enter__(self) -> "Recorder":
        from nnprobe.train.recorded_run import RecordedRun

        if self._run is not None or self._result is not None:
            raise RecorderError("this Recorder was already used; make a new one for every run.")
        self._run = RecordedRun(self)
        self._catch_sigterm()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._step is not None and self._step._state == "open":
                self._close(self._step, exc)
            self._result = self._run.finish(exc, self._start_record(None))
        finally:
            self._restore_sigterm()
        return False

    @property
    def run_dir(self) -> Path:
        if self._run is None:
            raise RecorderError("rec.run_dir: the run directory is made when the `with` block starts.")
        return self._run.run_dir

    @property
    def result(self):
        """status, findings and run_dir as `train` gives them (a nnprobe.result.RunResult)."""
        if self._result is None:
            raise RecorderError("rec.result: available once the `with nnprobe.Recorder(...) as rec:` block has ended.")
        return self._result

    def data(self, X, y=None) -> None:
        """The training inputs (and targets): enables the input-scale checks. Call it before the first step."""
        if self._run is None:
            raise RecorderError("rec.data(): call it inside `with nnprobe.Recorder(...) as rec:`.")
        if self._run.started:
            raise RecorderError("rec.data(): call it before the first step; the start record is already written.")
        X = _array(X, "rec.data(X)")
        y = _array(y, "rec.data(y)")
        if X.ndim not in (1, 2) or X.shape[0] == 0:
            raise RecorderError(f"rec.data(X): expected examples in rows (n,) or (n, features), got shape {X.shape}.")
        if y is not None and y.shape[0] != X.shape[0]:
            raise RecorderError(f"rec.data(): X has {X.shape[0]} rows but y has {y.shape[0]}; pass matching arrays.")
        self._data = tr.data_summary(X, y, self.task)

    def step(self) -> Step:
        """A new step block: `with rec.step() as s:`."""
        if self._run is None:
            raise RecorderError("rec.step(): use it inside `with nnprobe.Recorder(...) as rec:`.")
        if self._result is not None:
            raise RecorderError("rec.step(): the recorder's `with` block has ended; the run is finished.")
        index = self._steps
        return Step(self, index, full=index % self.every == 0)

    # -- called by Step

    def _open(self, step: Step) -> None:
        if self._run is None or self._result is not None:
            raise RecorderError("rec.step(): use it inside `with nnprobe.Recorder(...) as rec:`.")
        if self._step is not None and self._step._state == "open":
            raise RecorderError(
                f"step {step.index}: a step block was entered inside another one (step {self._step.index}); "
                "steps follow one another."
            )
        if step.index != self._steps:
            raise RecorderError(f"step {step.index}: this step block is stale; call rec.step() for each step.")
        self._step = step
        self._steps += 1

    def _take_forward(self, step: Step, given: LayerGiven) -> None:
        for key in ("W", "b"):
            arr = getattr(given, key)
            if arr is not None:
                tracker = self._trackers.setdefault(f"{given.name}.{key}", tr.UpdateTracker())
                if key == "W":
                    given.rebound = tracker.rebound(arr)
        if step.full:
            self._summarise_forward(step, given)
        else:
            for key in TENSORS:
                given.finite[key] = tr.is_finite(getattr(given, key))
            if not all(given.finite.values()):
                self._make_full(step)

    def _make_full(self, step: Step) -> None:
        """A non-finite value on a light step: the record becomes full, with everything given so far."""
        step.full = True
        for given in step.layers:
            self._summarise_forward(step, given)
            if given.name in step.grads_given:
                self._summarise_grads(given)

    def _summarise_forward(self, step: Step, given: LayerGiven) -> None:
        if "z" in given.stats:
            return
        s = given.stats
        s["z"], s["a"] = tr.forward(given.z, given.a, given.activation)
        s["W"] = tr.weights(given.W, distribution=step.index == 0)
        s["b"] = tr.bias(given.b)
        for key in ("z", "a"):
            arr = getattr(given, key)
            if arr is not None and not (key == "a" and given.a is given.z):
                given.prints[key] = tr.Fingerprint.of(arr)
        for key in ("z", "a", "W"):
            given.finite[key] = _finite_stats(s[key])
        given.finite["b"] = tr.is_finite(given.b)
        w_norm = (s["W"] or {}).get("norm")
        for key in ("W", "b"):
            arr = getattr(given, key)
            if arr is not None:
                self._trackers[f"{given.name}.{key}"].keep(arr, w_norm if key == "W" else None)

    def _take_loss(self, step: Step, value: float, outputs, targets) -> None:
        step.loss_value = value
        step.outputs_given = outputs is not None
        step.loss_finite = math.isfinite(value)
        if not step.full and not step.loss_finite:
            self._make_full(step)
        if step.full:
            step.loss_in = tr.loss_inputs(outputs, self.loss_kind)
            if self.task == "classification" and outputs is not None and targets is not None:
                step.accuracy = tr.accuracy(outputs, targets)

    def _take_grads(self, step: Step, given: LayerGiven, gW, gb) -> None:
        given.gW, given.gb = gW, gb
        if step.full:
            self._summarise_grads(given)
            return
        sqw, sqb = _sq(gW), _sq(gb)
        given.grad_sq = sqw + sqb
        given.finite["gW"], given.finite["gb"] = sqw < math.inf, sqb < math.inf
        if not (sqw < math.inf and sqb < math.inf):
            self._make_full(step)

    def _summarise_grads(self, given: LayerGiven) -> None:
        if "gW" in given.stats:
            return
        given.stats["gW"], sqw = tr.gradient(given.gW, with_zero_frac=True)
        given.stats["gb"], sqb = tr.gradient(given.gb, with_zero_frac=False)
        given.grad_sq = sqw + sqb
        given.finite["gW"], given.finite["gb"] = _finite_stats(given.stats["gW"]), _finite_stats(given.stats["gb"])

    def _close(self, step: Step, exc: Optional[BaseException]) -> None:
        """The end of a step block: the record is written whatever happened inside it."""
        if self._step is not step:
            return
        self._step = None
        problem = self._layout.close_step(step.index, step.layers)
        if not self._run.started:
            self._run.start(self._start_record(step))
        self._run.write_step(self._step_record(step))
        self.stopped = self._run.stopped_by is not None
        if problem is not None and exc is None:
            raise RecorderError(problem)

    # -- records

    def _start_record(self, first: Optional[Step]) -> dict:
        """The start record `train` writes, from what the first step gave (layers) and rec.data()."""
        layers, given = [], set()
        for i, g in enumerate(first.layers if first is not None else []):
            layers.append({"name": g.name, **tr.layer_size(g.shapes), "activation": g.activation,
                           "is_output": i == len(first.layers) - 1})
            given |= set(g.shapes)
            if g.activation is not None and i == len(first.layers) - 1:
                given.add("activation")
        dtypes = [getattr(g, k).dtype for g in (first.layers if first else []) for k in TENSORS
                  if getattr(g, k) is not None]
        if first is not None and first.loss_given:
            given.add("loss")
            if first.loss_in is not None or first.outputs_given:
                given.add("outputs")
        if self.loss_kind is not None:
            given.add("loss_kind")
        if self._data is not None:
            given.add("data")
        rows = next((getattr(g, k).shape[0] for g in (first.layers if first else []) for k in ("z", "a")
                     if getattr(g, k) is not None and getattr(g, k).ndim == 2), None)
        return {
            "type": "start", "schema": SCHEMA_VERSION, "nnprobe": nnprobe.__version__, "name": self.name,
            "seed": None, "task": self.task, "dtype": str(dtypes[0]) if dtypes else None,
            "probes_every": self.every, "batch_size": rows, "total_steps": None, "layers": layers,
            "loss": {"kind": self.loss_kind, "reduction": None, "from_logits": False, "epsilon": 0.0, "l2": 0.0},
            "optimizer": {"kind": None, "lr": None, "clip_grad_norm": None},
            "data": self._data or {},
            "recorded": {"given": sorted(given), "arguments": self.arguments},
        }

    def _step_record(self, step: Step) -> dict:
        """The step record of docs/log-schema.md, from what the step gave; the first non-finite tensor named."""
        layers = []
        updates: list[tuple[str, Optional[tr.Update]]] = []
        for g in step.layers:
            changed = [k for k, fp in g.prints.items() if not fp.same(tr.Fingerprint.of(getattr(g, k)))]
            update = self._trackers[f"{g.name}.W"].in_place() if g.W is not None and step.full else None
            b_update = self._trackers[f"{g.name}.b"].in_place() if g.b is not None and step.full else None
            updates.append((g.name, update, b_update))
            if step.full:
                layer = {"name": g.name, **{k: g.stats.get(k) for k in ("z", "a", "gW", "gb", "W", "b")},
                         "update_ratio": (update or g.rebound or _NO_UPDATE).ratio}
                if changed:
                    layer["changed_after_forward"] = changed
                layers.append(layer)
            g.z = g.a = g.W = g.b = g.gW = g.gb = None  # let the loop's arrays go
        grads = [g for g in step.layers if g.name in step.grads_given]
        record: dict = {
            "type": "step", "step": step.index, "full": step.full, "loss": step.loss_value,
            "grad_norm": math.sqrt(sum(g.grad_sq for g in grads)) if grads else None,
            "nonfinite": _origin(step, updates), "loss_in": step.loss_in,
        }
        if step.full:
            if step.accuracy is not None:
                record["accuracy"] = step.accuracy
            record["layers"] = layers
        return record

    # -- SIGTERM ends the loop like Ctrl-C: every record written, status interrupted

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)

    def _restore_sigterm(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


_NO_UPDATE = tr.Update(None, True)


def _origin(step: Step, updates) -> Optional[dict]:
    """The first non-finite tensor of the step in computation order (docs/log-schema.md), or None.

    A weight handed over non-finite was made so by an earlier update (a loop that rebinds W shows
    it only now); an in-place update shows it at the end of its own step.
    """
    for g in step.layers:
        for key, tensor, pass_ in (("W", "weight", "update"), ("b", "bias", "update"),
                                   ("z", "pre-activation", "forward"), ("a", "activation", "forward")):
            if not g.finite.get(key, True):
                return {"pass": pass_, "tensor": tensor, "layer": g.name}
    if not step.loss_finite:
        return {"pass": "forward", "tensor": "loss", "layer": None}
    for g in reversed(step.layers):
        for key, tensor in (("gW", "weight-gradient"), ("gb", "bias-gradient")):
            if not g.finite.get(key, True):
                return {"pass": "backward", "tensor": tensor, "layer": g.name}
    for name, w_update, b_update in updates:
        for update, tensor in ((w_update, "weight"), (b_update, "bias")):
            if update is not None and not update.finite:
                return {"pass": "update", "tensor": tensor, "layer": name}
    return None


def _sq(g: Optional[np.ndarray]) -> float:
    return 0.0 if g is None else tr.sq_norm(g)



def _finite_stats(st: Optional[dict]) -> bool:
    if st is None:
        return True
    return not (st.get("nan") or st.get("posinf") or st.get("neginf") or st.get("nonfinite"))
