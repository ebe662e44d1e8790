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

Each tensor goes to the record builder (probes.records, the one `train` writes through) when the
loop hands it over; the end of the step adds what only it shows (probes.changes): a forward tensor
written into after it was handed over, and the update applied to each weight. The run directory,
step log and live detectors are `train`'s own (recorded.py). This module is the interface
and its misuse checks: every misuse is a RecorderError that says what was given and what to do.
"""

from __future__ import annotations

import difflib
import functools
import math
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from nnprobe.errors import RecorderError
from nnprobe.nn.activations import ACTIVATIONS
from nnprobe.probes import changes, records

LOSS_KINDS = ("mse", "bce", "cross_entropy")
TASKS = ("regression", "classification")
TENSORS = ("z", "a", "W", "b")
GRADIENTS = ("gW", "gb")

#: a built-in activation's name -> |z| beyond which it is flat (sigmoid, tanh); any other name: unknown, None
SATURATION: dict[str, Optional[float]] = {name: cls.saturation for name, cls in ACTIVATIONS.items()}


def _array(value: Any, where: str, max_ndim: int = 2) -> Optional[np.ndarray]:
    """A NumPy array of numbers, read as float (integers as float64), or None; anything else is misuse."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise RecorderError(
            f"{where}: expected a NumPy array, got {type(value).__name__}. Pass the array itself "
            "(np.asarray(...) turns a list into one)."
        )
    if value.dtype.kind not in "fiub":
        raise RecorderError(f"{where}: expected an array of numbers, got dtype {value.dtype}.")
    if value.ndim > max_ndim or value.size == 0:
        raise RecorderError(f"{where}: expected a non-empty array of at most {max_ndim} dimensions, "
                            f"got shape {value.shape}; examples go in rows, (batch, units).")
    return changes.as_float(value)


def _quiet(method):
    """NaN and inf are data here: the statistics of an overflowing tensor raise no NumPy warnings."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return method(*args, **kwargs)
    return wrapper


def _choice(value: Optional[str], valid: tuple[str, ...], key: str) -> Optional[str]:
    if value is None or value in valid:
        return value
    hint = difflib.get_close_matches(str(value), valid, n=1)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise RecorderError(f"Recorder({key}={value!r}): unknown{did}; valid: {', '.join(valid)}, or None.")


@dataclass
class LayerGiven:
    """What one s.layer() (and s.grads()) call handed over in one step."""

    name: str
    activation: Optional[str]
    shapes: dict[str, tuple]
    arrays: dict[str, np.ndarray]  # held until the step ends: the in-place check and the update
    prints: dict[str, changes.Fingerprint] = field(default_factory=dict)  # z and a when handed over
    changed: list[str] = field(default_factory=list)  # those of them written into since
    rebound_norm: Optional[float] = None  # ||W - W_before||, when the loop handed a new W array over

    def check_writes(self) -> None:
        """Compare z and a with their fingerprints: once their gradients are given (a derivative function
        that writes into its argument has run by then), or at the end of the step."""
        for key, fp in self.prints.items():
            if not fp.same(changes.Fingerprint.of(self.arrays[key])):
                self.changed.append(key)
        self.prints = {}


class Step:
    """One step of the person's loop: `with rec.step() as s:` and the calls below, in forward order."""

    def __init__(self, recorder: "Recorder", index: int, full: bool) -> None:
        self._rec = recorder
        self.index = index
        self.full = full
        self._state = "new"  # new -> open -> closed
        self.layers: list[LayerGiven] = []
        self._by_name: dict[str, LayerGiven] = {}
        self.builder = records.StepRecordBuilder(index, full=full, weight_distribution=index == 0)
        self.loss_given = False
        self.outputs_given = False
        self.grads_given: set[str] = set()

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

    @_quiet
    def layer(self, name: str, z=None, a=None, W=None, b=None, activation: Optional[str] = None) -> None:
        """One layer's forward tensors and the parameters the forward pass used, in forward order."""
        self._check_open("layer")
        where = f"step {self.index}: s.layer({name!r})"
        if not isinstance(name, str) or not name:
            raise RecorderError(f"step {self.index}: s.layer(name): expected a non-empty string, got {name!r}.")
        if name in self._by_name:
            raise RecorderError(f"{where}: the layer was already given in this step; give each layer once.")
        if activation is not None and not isinstance(activation, str):
            raise RecorderError(f"{where}: activation: expected a name such as 'relu', got {activation!r}.")
        same = a is not None and a is z  # an identity activation hands z itself back
        arrays = {k: v for k, v in (("z", _array(z, f"{where}, z=")), ("a", _array(a, f"{where}, a=")),
                                    ("W", _array(W, f"{where}, W=")), ("b", _array(b, f"{where}, b=")))
                  if v is not None}
        if same:
            arrays["a"] = arrays["z"]
        given = LayerGiven(name, activation, {k: v.shape for k, v in arrays.items()}, arrays)
        self._rec._layout.check_layer(self.index, len(self.layers), given)
        self.layers.append(given)
        self._by_name[name] = given
        self._rec._take_layer(self, given)

    @_quiet
    def loss(self, value, outputs=None, targets=None) -> None:
        """The step's loss; `outputs`: what the loss took the log of (the cross-entropy family)."""
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
        self.outputs_given = outputs is not None
        self._rec._take_loss(self, float(value), outputs, targets)

    @_quiet
    def grads(self, name: str, gW=None, gb=None) -> None:
        """A declared layer's parameter gradients, before the update (the loop may reuse the buffers after)."""
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
        arrays = {k: v for k, v in (("gW", _array(gW, f"{where}, gW=")), ("gb", _array(gb, f"{where}, gb=")))
                  if v is not None}
        self._rec._layout.check_grads(self.index, given.name, {k: v.shape for k, v in arrays.items()})
        given.shapes.update({k: v.shape for k, v in arrays.items()})
        self.grads_given.add(name)
        self.builder.grads(name, gW=arrays.get("gW"), gb=arrays.get("gb"))
        given.check_writes()  # z and a are still in the cache: the backward pass just read them
        if self._rec._layout.all_grads_given(self.grads_given):
            self.builder.before_update()  # the update comes next: settle what needs the tensors unchanged


@dataclass
class LayerSpec:
    name: str
    activation: Optional[str]
    shapes: dict[str, tuple]

    def of_kinds(self, kinds: tuple) -> dict[str, tuple]:
        """The first step's shapes of the forward (TENSORS) or gradient (GRADIENTS) tensors."""
        return {k: v for k, v in self.shapes.items() if k in kinds}


def _same_shape(kind: str, first: tuple, now: tuple) -> bool:
    """z and a may change their first (batch) dimension, e.g. on the last minibatch; parameters may not."""
    if kind in ("z", "a") and len(first) == 2:
        return len(now) == 2 and first[1:] == now[1:]
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
        if i >= len(self.specs) or self.specs[i].name != given.name:
            expected = repr(self.specs[i].name) if i < len(self.specs) else "no more layers"
            raise RecorderError(
                f"{where}: the first step gave the layers {[s.name for s in self.specs]} in this order; at "
                f"position {i + 1} it expected {expected}. Give the same layers in the same (forward) order every step."
            )
        self._compare(where, self.specs[i], given.activation, given.shapes, TENSORS)

    def check_grads(self, step: int, name: str, shapes: dict[str, tuple]) -> None:
        if self.specs is None:
            next(s for s in self._first if s.name == name).shapes.update(shapes)
            return
        spec = next(s for s in self.specs if s.name == name)
        self._compare(f"step {step}: s.grads({name!r})", spec, spec.activation, shapes, GRADIENTS)

    def all_grads_given(self, names: set[str]) -> bool:
        """Whether every layer that takes gradients has had them this step (known from the second step on)."""
        return self.specs is not None and all(s.name in names for s in self.specs
                                              if any(k in s.shapes for k in GRADIENTS))

    def _compare(self, where: str, spec: LayerSpec, activation, shapes: dict, kinds: tuple) -> None:
        if activation == spec.activation and shapes == spec.of_kinds(kinds):
            return  # the same tensors and shapes as the first step: the usual case, one comparison
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


def layer_size(shapes: dict[str, tuple]) -> tuple[int, int]:
    """(fan_in, units) from the shapes handed over, 0 where they do not say: examples in rows, W as
    (fan_in, units); a W stored (units, fan_in), as in W @ x, is recognised when z, a or b gives the units."""
    units = next((shapes[k][-1] for k in ("z", "a", "b", "gb") if k in shapes and shapes[k]), None)
    fan_in = 0
    W = shapes.get("W") or shapes.get("gW")
    if W is not None and len(W) == 2:
        if units is None or W[1] == units:
            fan_in, units = W[0], W[1]
        elif W[0] == units:
            fan_in = W[1]
    return int(fan_in), int(units or 0)


def accuracy(outputs: np.ndarray, targets: np.ndarray) -> Optional[float]:
    """Fraction of rows predicted right: argmax of several outputs, or one output at 0.5; targets as
    labels or one-hot rows. None when the shapes do not say how to compare them."""
    out = outputs.reshape(-1, 1) if outputs.ndim == 1 else outputs
    n, k = out.shape
    if targets.shape[0] != n:
        return None
    pred = out.argmax(axis=1) if k > 1 else out[:, 0] >= 0.5
    if targets.ndim == 2 and targets.shape[1] == k > 1:
        labels = targets.argmax(axis=1)
    elif targets.ndim == 1 or targets.shape[1] == 1:
        labels = targets.reshape(-1)
    else:
        return None
    return float(np.count_nonzero(pred == labels)) / n


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
        codes = [stop_on] if isinstance(stop_on, str) else stop_on
        try:
            codes = list(codes)
            validate_codes(codes, "Recorder(stop_on=)")
        except TypeError:
            raise RecorderError(f"Recorder(stop_on={stop_on!r}): expected a list of finding codes.") from None
        except ValueError as exc:
            raise RecorderError(str(exc)) from None
        if name is not None and (not isinstance(name, str) or not name):
            raise RecorderError(f"Recorder(name={name!r}): expected a non-empty string.")
        self.out = Path(out)
        self.every = every
        self.stop_on = codes
        self.name = name or self.out.name
        self.arguments = {"loss": loss, "task": task, "every": every, "stop_on": codes, "name": name}
        self.stopped = False
        self._layout = Layout()
        self._run = None  # recorded.RecordedRun from the start of the block
        self._result = None
        self._step: Optional[Step] = None
        self._steps = 0
        self._data: Optional[dict] = None
        self._trackers: dict[str, changes.UpdateTracker] = {}
        self._previous_handler = None

    # -- the block

    def __enter__(self) -> "Recorder":
        from nnprobe.train.recorded import RecordedRun, recorded_config
        from nnprobe.train.rundir import next_free_dir

        if self._run is not None:
            raise RecorderError("this Recorder was already used; make a new one for every run.")
        config = recorded_config(self.name, self.loss_kind, self.every, self.stop_on)
        self._run = RecordedRun(config, next_free_dir(self.out), extra_meta={"recorded": dict(self.arguments)},
                                remedy="choose a writable directory for Recorder(out=...)",
                                argument="Recorder(out=...):")
        self._catch_sigterm()
        return self

    @_quiet
    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._run.start is None:  # no step: the start record still makes the run one diagnose reads
                self._run.begin(self._start_record(None))
            status = ("completed" if exc is None else "interrupted" if isinstance(exc, KeyboardInterrupt)
                      else "failed")
            self._result = self._run.finish(status)
        finally:
            self._restore_sigterm()
        return False

    @property
    def run_dir(self) -> Path:
        """The run directory (`out`, or `out-2`, `out-3`, ... when `out` already holds a run)."""
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
        if self._run is None or self._result is not None:
            raise RecorderError("rec.data(): call it inside `with nnprobe.Recorder(...) as rec:`.")
        if self._steps:
            raise RecorderError("rec.data(): call it before the first step; the start record is made from it.")
        X = _array(X, "rec.data(X)")
        y = _array(y, "rec.data(y)")
        if y is not None and y.shape[0] != X.shape[0]:
            raise RecorderError(f"rec.data(): X has {X.shape[0]} rows but y has {y.shape[0]}; pass matching arrays.")
        n_classes = None
        if self.task == "classification" and y is not None:
            n_classes = int(y.shape[1]) if y.ndim == 2 and y.shape[1] > 1 else int(np.unique(y).size)
        # summarised now: the loop may normalise X in place later, and the start record must say what it trained on
        self._data = records.start_record(name=self.name, seed=None, task=self.task, dtype=str(X.dtype), layers=[],
                                          x=X, y=y, n_classes=n_classes)["data"]

    def step(self) -> Step:
        """A new step block: `with rec.step() as s:`."""
        if self._run is None or self._result is not None:
            raise RecorderError("rec.step(): use it inside `with nnprobe.Recorder(...) as rec:`.")
        return Step(self, self._steps, full=self._steps % self.every == 0)

    # -- called by Step

    def _open(self, step: Step) -> None:
        if self._run is None or self._result is not None:
            raise RecorderError("rec.step(): use it inside `with nnprobe.Recorder(...) as rec:`.")
        if self._step is not None:
            raise RecorderError(
                f"step {step.index}: a step block was entered inside another one (step {self._step.index}); "
                "steps follow one another."
            )
        if step.index != self._steps:
            raise RecorderError(f"step {step.index}: this step block is stale; call rec.step() for each step.")
        self._step = step
        self._steps += 1

    def _take_layer(self, step: Step, given: LayerGiven) -> None:
        arrays = given.arrays
        W = arrays.get("W")
        tracker = None
        if W is not None:
            tracker = self._trackers.get(given.name)
            if tracker is None:
                tracker = self._trackers[given.name] = changes.UpdateTracker()
        W_given = W
        if tracker is not None:
            given.rebound_norm = tracker.rebound(W)
            if step.full:
                sq = tracker.keep(W, step.index)  # the copy the update is measured against; ||W||^2 from the same read
                if sq is not None and sq < math.inf and not step.builder.weight_distribution:
                    W_given = {"norm": math.sqrt(sq), "nonfinite": 0}
        a_from_z = "identity" if arrays.get("a") is not None and arrays.get("a") is arrays.get("z") else "other"
        step.builder.layer(given.name, z=arrays.get("z"), a=arrays.get("a"), W=W_given, b=arrays.get("b"),
                           saturation=SATURATION.get(given.activation or ""), a_from_z=a_from_z)
        if step.full:
            for key in ("z", "a"):
                if key in arrays and not (key == "a" and a_from_z == "identity"):
                    given.prints[key] = changes.Fingerprint.of(arrays[key])

    def _take_loss(self, step: Step, value: float, outputs, targets) -> None:
        loss_in = None
        if outputs is not None and self.loss_kind in ("bce", "cross_entropy"):
            loss_in = records.LossInputs(outputs, 0.0, self.loss_kind == "bce")
        step.builder.loss(value, loss_in)
        if self.task == "classification" and outputs is not None and targets is not None:
            step.builder.accuracy(accuracy(outputs, targets))

    @_quiet
    def _close(self, step: Step, exc: Optional[BaseException]) -> None:
        """The end of a step block: the record is written whatever happened inside it."""
        if self._step is not step:
            return
        self._step = None
        problem = self._layout.close_step(step.index, step.layers)
        if self._run.start is None:
            self._run.begin(self._start_record(step))
        self._run.step(self._step_record(step))
        self.stopped = self._run.stopped_by is not None
        if problem is not None and exc is None:
            raise RecorderError(problem)

    # -- records

    def _start_record(self, first: Optional[Step]) -> dict:
        """The start record `train` writes, from the layers of the first step and rec.data()."""
        layers = first.layers if first is not None else []
        specs, given = [], set()
        for i, g in enumerate(layers):
            fan_in, units = layer_size(g.shapes)
            specs.append(records.LayerSpec(g.name, fan_in, units, g.activation, i == len(layers) - 1))
            given |= set(g.shapes)
        if layers and layers[-1].activation is not None:
            given.add("activation")
        if first is not None and first.loss_given:
            given.add("loss")
            if first.outputs_given:
                given.add("outputs")
        if self.loss_kind is not None:
            given.add("loss_kind")
        if self._data is not None:
            given.add("data")
        tensors = [v for g in layers for v in g.arrays.values()]
        rows = next((v.shape[0] for g in layers for k, v in g.arrays.items() if k in ("z", "a") and v.ndim == 2), None)
        start = records.start_record(
            name=self.name, seed=None, task=self.task, dtype=str(tensors[0].dtype) if tensors else None,
            layers=specs, x=None, probes_every=self.every, batch_size=rows,
            loss={"kind": self.loss_kind, "reduction": None, "from_logits": False, "epsilon": 0.0, "l2": None},
        )
        start["data"] = self._data
        start["recorded"] = {"given": sorted(given), "arguments": self.arguments}
        return start

    def _step_record(self, step: Step) -> dict:
        """The builder's record, with what the end of the step shows: writes into z or a, and the updates."""
        builder = step.builder
        builder.before_update()
        for g in step.layers:
            W, b = g.arrays.get("W"), g.arrays.get("b")
            W_after = W
            if W is not None and step.full:
                tracker = self._trackers[g.name]
                norm = tracker.in_place(step.index)
                if norm is not None and tracker.after_finite is not None:
                    W_after = tracker.after_finite  # known from the read that measured the update
            else:
                norm = None
            if W is not None or b is not None:
                builder.update(g.name, W_after=W_after, b_after=b, norm=norm)
        record = builder.record()
        for g, layer in zip(step.layers, record.get("layers") or []):
            g.check_writes()
            if g.changed:
                layer["changed_after_forward"] = g.changed
            tracker = self._trackers.get(g.name)
            if tracker is not None:
                before = tracker.norm_before
                if g.rebound_norm is not None and layer["update_ratio"] is None and before:
                    layer["update_ratio"] = g.rebound_norm / before  # the update that made this step's W
                tracker.norm_before = (layer.get("W") or {}).get("norm")
            g.arrays = {}  # let the loop's arrays go
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
