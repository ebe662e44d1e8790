"""User activations: `model.activation: "module:name"`, loaded explicitly and wrapped into the Activation contract.

Loading user code is never triggered by the YAML itself (configs are read with yaml.safe_load,
which rejects `!!python/...` tags); only a `module:name` value of `model.activation` does it, and
every file loaded is recorded with its SHA-256 in the run's meta.json. See docs/user-activations.md.

The user object needs two elementwise methods, `forward(z)` and `derivative(z)`; nnprobe checks
their output (a float array of z's shape) on every call, and `nnprobe.app.prepare_user_activation` checks the
derivative against finite differences of `forward` before any training step.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import keyword
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import numpy as np

from nnprobe.nn.activations import Activation
from nnprobe.errors import UserCodeError

KEY = "model.activation"
DOCS = "docs/user-activations.md"
_PRIVATE_PREFIX = "nnprobe_user_code"


def _is_dotted_identifier(text: str) -> bool:
    parts = text.split(".")
    return bool(parts) and all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def split_spec(spec: str) -> tuple[str, str]:
    """'pkg.module:name' -> ('pkg.module', 'name'), or UserCodeError saying what the form is."""
    module, sep, attr = spec.partition(":")
    if not sep or not _is_dotted_identifier(module.strip()) or not _is_dotted_identifier(attr.strip()):
        raise UserCodeError(
            f"{KEY}: {spec!r} is not a valid user activation; expected 'module:name', for example "
            "'my_activations:Swish' for a class (or object) Swish defined in my_activations.py next to the config "
            f"file. Built-in activations are written without a colon (relu, tanh, ...). See {DOCS}."
        )
    return module.strip(), attr.strip()


def _sha256(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _where_raised(exc: BaseException, file: Optional[Path]) -> str:
    """' (line N of file)' for the innermost frame in the user's file, when there is one."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f" (line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    if file is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == file.resolve()]
        if mine:
            return f" (line {mine[-1].lineno}: `{(mine[-1].line or '').strip()}`)"
    if frames:
        last = frames[-1]
        return f" ({Path(last.filename).name}, line {last.lineno})"
    return ""


def _describe_exc(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------- finding and importing the module


def _local_file(module: str, base_dir: Path) -> Optional[Path]:
    rel = Path(*module.split("."))
    for candidate in (base_dir / rel.with_name(rel.name + ".py"), base_dir / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _exec_file(spec: str, module: str, file: Path, base_dir: Path) -> ModuleType:
    """Execute a module file found next to the config under a private name (fresh each time, never cached)."""
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:10]
    name = f"{_PRIVATE_PREFIX}.{digest}.{module}"
    is_package = file.name == "__init__.py"
    mod_spec = importlib.util.spec_from_file_location(
        name, file, submodule_search_locations=[str(file.parent)] if is_package else None
    )
    if mod_spec is None or mod_spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise UserCodeError(f"{KEY} {spec!r}: {file} cannot be loaded as a Python module.")
    mod = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = mod  # dataclasses and typing look the module up while it executes
    base = str(base_dir.resolve())
    sys.path.insert(0, base)  # so that the file can import its siblings next to the config
    try:
        mod_spec.loader.exec_module(mod)
    except ModuleNotFoundError as exc:
        sys.modules.pop(name, None)
        raise UserCodeError(
            f"{KEY} {spec!r}: {file} imports {exc.name!r}{_where_raised(exc, file)}, which is not installed or not "
            "on sys.path (nor next to the config). Install it, or remove that import from the activation's file."
        ) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UserCodeError(
            f"{KEY} {spec!r}: importing {file} raised {_describe_exc(exc)}{_where_raised(exc, file)}. "
            "nnprobe runs that file as Python when the config names it; fix the error (try "
            f"`python {file}`), or choose a built-in activation."
        ) from None
    finally:
        try:
            sys.path.remove(base)
        except ValueError:
            pass
    return mod


def _import_module(spec: str, module: str, base_dir: Path) -> tuple[ModuleType, Optional[Path]]:
    local = _local_file(module, base_dir)
    if local is not None:
        return _exec_file(spec, module, local, base_dir), local
    rel = Path(*module.split("."))
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module or module.startswith(missing + "."):
            raise UserCodeError(
                f"{KEY} {spec!r}: no module {module!r}. nnprobe looked for "
                f"{base_dir / rel.with_name(rel.name + '.py')} (next to the config file) and then on sys.path. "
                f"Put {rel.name}.py next to the config, fix the module name, or install the package that provides "
                f"it. See {DOCS}."
            ) from None
        raise UserCodeError(
            f"{KEY} {spec!r}: importing module {module!r} failed because it imports {missing!r}, which is not "
            "installed or not on sys.path. Install it, or remove that import from the activation's module."
        ) from None
    except Exception as exc:
        file = getattr(sys.modules.get(module), "__file__", None)
        raise UserCodeError(
            f"{KEY} {spec!r}: importing module {module!r} raised {_describe_exc(exc)}"
            f"{_where_raised(exc, Path(file) if file else None)}. Fix the module, or choose a built-in activation."
        ) from None
    file = getattr(mod, "__file__", None)
    return mod, Path(file) if file else None


# ---------------------------------------------------------------- the object and its methods


def _candidates(mod: ModuleType) -> list[str]:
    """Public names in the module that look like activations (have forward and derivative)."""
    out = []
    for name, value in vars(mod).items():
        if name.startswith("_"):
            continue
        if callable(getattr(value, "forward", None)) and callable(getattr(value, "derivative", None)):
            out.append(name)
    return sorted(out)


def _resolve_object(spec: str, mod: ModuleType, attr: str, where: str) -> Any:
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            cands = _candidates(mod)
            hint = difflib.get_close_matches(attr, cands, n=1)
            did = f" Did you mean {hint[0]!r}?" if hint else ""
            listed = (f" Objects there with forward and derivative: {', '.join(cands)}." if cands else
                      " Nothing in it has both forward and derivative methods.")
            raise UserCodeError(f"{KEY} {spec!r}: {where} has no attribute {attr!r}.{did}{listed}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        try:
            return obj()
        except TypeError as exc:
            raise UserCodeError(
                f"{KEY} {spec!r}: {attr} in {where} is a class and nnprobe instantiates it with no arguments, but "
                f"{attr}() raised TypeError: {exc}. Give every __init__ argument a default, or define a module-level "
                f"instance (`swish = {attr}(beta=1.0)`) and name that instead ('module:swish')."
            ) from None
        except Exception as exc:
            raise UserCodeError(
                f"{KEY} {spec!r}: creating {attr}() from {where} raised {_describe_exc(exc)}"
                f"{_where_raised(exc, None)}. Fix its __init__."
            ) from None
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        raise UserCodeError(
            f"{KEY} {spec!r}: {attr} in {where} is a function, but a user activation is an object with two "
            "methods, forward(z) and derivative(z), kept side by side (a class nnprobe instantiates, or an instance). "
            f"Wrap the function and its derivative in a class. See {DOCS}."
        )
    return obj


def _check_methods(spec: str, obj: Any, attr: str, where: str) -> None:
    missing = [m for m in ("forward", "derivative") if not callable(getattr(obj, m, None))]
    if missing:
        names = " and ".join(f"{m}(z)" for m in missing)
        raise UserCodeError(
            f"{KEY} {spec!r}: {attr} in {where} has no callable {names}. A user activation needs both: "
            "forward(z) returns the activation of an array z, derivative(z) its elementwise derivative da/dz, "
            f"each a float array of z's shape. See {DOCS}."
        )


class UserActivation(Activation):
    """A user's forward/derivative pair under the Activation contract; each output is checked for shape and dtype."""

    elementwise = True

    def __init__(self, obj: Any, spec: str, file: Optional[Path]) -> None:
        self.obj = obj
        self.name = spec
        self.spec = spec
        self.file = file
        self._forward = obj.forward
        self._derivative = obj.derivative
        sat = getattr(obj, "saturation", None)
        self.saturation = float(sat) if isinstance(sat, (int, float)) and not isinstance(sat, bool) else None

    @property
    def where(self) -> str:
        return str(self.file) if self.file else "its module"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return self._call("forward", self._forward, z)

    def derivative(self, z: np.ndarray, a: Optional[np.ndarray] = None) -> np.ndarray:
        return self._call("derivative", self._derivative, z)

    def vjp(self, z: np.ndarray, a: np.ndarray, grad_a: np.ndarray) -> np.ndarray:
        return grad_a * self.derivative(z, a)

    def _call(self, what: str, fn, z: np.ndarray) -> np.ndarray:
        try:
            out = fn(z)
        except Exception as exc:
            raise UserCodeError(
                f"{KEY} {self.spec!r} ({self.where}): {what}(z) raised {_describe_exc(exc)}"
                f"{_where_raised(exc, self.file)} when called with a float array of shape {z.shape} "
                f"(dtype {z.dtype}). It must accept any 2-D array (batch x units) and work elementwise."
            ) from None
        if type(out) is not np.ndarray:
            if isinstance(out, np.ndarray):  # np.matrix and other subclasses: plain arrays from here on
                out = np.asarray(out)
            else:
                kind = type(out).__name__
                raise UserCodeError(
                    f"{KEY} {self.spec!r} ({self.where}): {what}(z) returned a {kind}, expected a NumPy array "
                    f"of z's shape {z.shape}. Build the result with NumPy operations on z "
                    + ("(for a constant derivative: np.ones_like(z))." if what == "derivative" else
                       "(np.maximum(z, 0), np.tanh(z), ...).")
                )
        if out.shape != z.shape:
            raise UserCodeError(
                f"{KEY} {self.spec!r} ({self.where}): {what}(z) returned an array of shape {out.shape} for z of "
                f"shape {z.shape}; an activation is elementwise, so its {what} must have exactly z's shape "
                "(no reduction over an axis, no broadcasting)."
            )
        if out.dtype != z.dtype:
            if out.dtype.kind != "f":
                raise UserCodeError(
                    f"{KEY} {self.spec!r} ({self.where}): {what}(z) returned an array of dtype {out.dtype}; expected "
                    f"floating point (z is {z.dtype}). Convert it, e.g. `(z > 0).astype(z.dtype)`."
                )
            out = out.astype(z.dtype)
        return out

    def __repr__(self) -> str:
        return f"<user activation {self.spec} from {self.where}>"


def load_user_activation(spec: str, base_dir: Path | str) -> UserActivation:
    """Import `module:name` (the config's directory first, then sys.path) and wrap the object it names."""
    module, attr = split_spec(spec)
    base_dir = Path(base_dir)
    mod, file = _import_module(spec, module, base_dir)
    where = str(file) if file else f"module {module!r}"
    obj = _resolve_object(spec, mod, attr, where)
    _check_methods(spec, obj, attr, where)
    return UserActivation(obj, spec, file)


def user_code_info(act: UserActivation) -> dict[str, Any]:
    """What meta.json records about the loaded code: enough to tell later which file, at which content, ran."""
    return {
        "spec": act.spec,
        "file": str(act.file.resolve()) if act.file else None,
        "sha256": _sha256(act.file) if act.file else None,
        "object": type(act.obj).__qualname__,
    }


__all__ = ["UserActivation", "load_user_activation", "split_spec", "user_code_info"]
