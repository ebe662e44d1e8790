"""The `data:` section: synthetic generators and CSV/NPZ loaders, then the validation split and normalization.

Every random draw comes from the generator the runner passes in (derived from the config's `seed`),
so one config always yields bit-identical arrays. Problems with the data are DataError messages
that name the file, the config key and the fix; only cli.py turns them into exit status 2.
"""

from __future__ import annotations

import math
import stat
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np

from nnprobe.errors import DataError
from nnprobe.limits import data_bytes, max_bytes

if TYPE_CHECKING:  # annotations only: config.py reads SOURCES from here, so data.py must not import it
    from nnprobe.config import DataConfig

TASKS = ("regression", "classification")


@dataclass
class Dataset:
    """Arrays ready for the model, plus what is needed to map predictions back to the user's units."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: str
    n_classes: Optional[int]
    target_mean: Optional[np.ndarray]
    target_std: Optional[np.ndarray]
    classes: Optional[np.ndarray] = None  # classification: class k stands for the original label classes[k]

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


# ---------------------------------------------------------------- generators


def _class_layout(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels grouped by class with sizes differing by at most one, each row's position in its class, and the sizes."""
    sizes = n // k + (np.arange(k) < n % k)
    labels = np.repeat(np.arange(k), sizes)
    starts = np.cumsum(sizes) - sizes
    return labels, np.arange(n) - starts[labels], sizes


def _add_noise(x: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian jitter; no draw at all when noise is 0, so the noise-free set is exact."""
    return x + noise * rng.standard_normal(x.shape) if noise > 0 else x


def _affine(cfg: DataConfig, k: Optional[int], noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x ~ U[low, high) as one column, y = slope*x + intercept + noise*N(0,1): the forum's 1-3-1 regression."""
    for key in ("low", "high", "slope", "intercept"):
        if not math.isfinite(getattr(cfg, key)):
            raise DataError(f"data.{key} is {getattr(cfg, key)}; data.source: affine needs finite numbers there.")
    n = cfg.n_samples
    if cfg.integer:
        lo, hi = math.ceil(cfg.low), math.ceil(cfg.high)
        if hi <= lo:
            raise DataError(
                f"data.low ({cfg.low:g}) and data.high ({cfg.high:g}): no integer lies in [low, high), so "
                "data.integer: true has nothing to draw. Widen the range or set data.integer: false."
            )
        try:
            x = rng.integers(lo, hi, size=(n, 1)).astype(np.float64)
        except ValueError:
            raise DataError(
                f"data.low ({cfg.low:g}) and data.high ({cfg.high:g}) are outside the 64-bit integer range that "
                "data.integer: true draws from. Use a smaller range or data.integer: false."
            ) from None
    else:
        x = rng.uniform(cfg.low, cfg.high, size=(n, 1))
    return x, _add_noise(cfg.slope * x + cfg.intercept, noise, rng)


def blob_centres(k: int, dim: int, separation: float) -> np.ndarray:
    """Class centres, centred on the origin: a regular simplex (every pair `separation` apart) when dim >= k - 1.

    With fewer dimensions equal pairwise distances are impossible; the centres then sit
    `separation` apart along a line (dim 1) or on a circle, neighbours `separation` apart.
    """
    centres = np.zeros((k, dim))
    if dim >= k - 1:
        # Column i of the Helmert basis is vertex i of a simplex with edge sqrt(2) in the k-1 dims orthogonal to (1,...,1).
        r = np.arange(1, k)[:, None]
        j = np.arange(k)[None, :]
        helmert = np.where(j < r, 1.0, np.where(j == r, -r, 0.0)) / np.sqrt(r * (r + 1.0))
        centres[:, : k - 1] = helmert.T * (separation / np.sqrt(2.0))
    elif dim == 1:
        centres[:, 0] = (np.arange(k) - (k - 1) / 2.0) * separation
    else:
        angle = 2.0 * np.pi * np.arange(k) / k
        radius = separation / (2.0 * np.sin(np.pi / k))
        centres[:, 0] = radius * np.cos(angle)
        centres[:, 1] = radius * np.sin(angle)
    return centres


def _blobs(cfg: DataConfig, k: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian clusters (make_blobs' idea) with `noise` as the per-cluster std."""
    labels, _, _ = _class_layout(cfg.n_samples, k)
    centres = blob_centres(k, cfg.n_features, cfg.separation)
    return _add_noise(centres[labels], noise, rng), labels


def _spirals(cfg: DataConfig, k: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CS231n's spiral arms: r = linspace(0, 1, N), theta = linspace(4j, 4(j+1), N) + noise*randn, x = r(sin, cos)."""
    labels, pos, sizes = _class_layout(cfg.n_samples, k)
    r = pos / np.maximum(sizes - 1, 1)[labels]
    theta = 4.0 * (labels + r)
    if noise > 0:
        theta = theta + noise * rng.standard_normal(theta.shape)
    return np.column_stack([r * np.sin(theta), r * np.cos(theta)]), labels


def _xor(cfg: DataConfig, k: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points in [-1, 1]^2; class 1 where the two coordinates differ in sign. Quadrants are balanced within a class."""
    labels, pos, _ = _class_layout(cfg.n_samples, 2)
    magnitude = 1.0 - rng.uniform(0.0, 1.0, size=(cfg.n_samples, 2))  # (0, 1]: no point on an axis
    first = np.where(pos % 2 == 0, 1.0, -1.0)
    second = np.where(labels == 0, first, -first)
    return _add_noise(magnitude * np.column_stack([first, second]), noise, rng), labels


def _moons(cfg: DataConfig, k: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """make_moons: upper unit half-circle (class 0) and the lower one shifted to centre (1, 0.5) (class 1)."""
    labels, pos, sizes = _class_layout(cfg.n_samples, 2)
    t = np.pi * pos / np.maximum(sizes - 1, 1)[labels]
    outer = labels == 0
    x = np.column_stack([np.where(outer, np.cos(t), 1.0 - np.cos(t)), np.where(outer, np.sin(t), 0.5 - np.sin(t))])
    return _add_noise(x, noise, rng), labels


def _circles(cfg: DataConfig, k: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """make_circles: unit circle (class 0) around a circle of radius `factor` (class 1), evenly spaced angles."""
    labels, pos, sizes = _class_layout(cfg.n_samples, 2)
    t = 2.0 * np.pi * pos / sizes[labels]
    radius = np.where(labels == 0, 1.0, cfg.factor)
    x = np.column_stack([radius * np.cos(t), radius * np.sin(t)])
    return _add_noise(x, noise, rng), labels


@dataclass(frozen=True)
class Generator:
    """A synthetic source: its sampler, the noise `noise: null` stands for, and how many classes it makes."""

    sample: Callable[[DataConfig, Optional[int], float, np.random.Generator], tuple[np.ndarray, np.ndarray]]
    default_noise: float
    n_classes: Callable[[DataConfig], Optional[int]]  # None: real-valued regression targets
    planar: bool = False  # a 2-D set: data.n_features must be 2
    targets: str = ""  # how a regression source makes its targets, for messages: " (y = ...)"


GENERATORS: dict[str, Generator] = {
    "affine": Generator(_affine, 0.0, lambda cfg: None, targets=" (y = slope*x + intercept)"),
    "blobs": Generator(_blobs, 1.0, lambda cfg: cfg.n_classes),
    "spirals": Generator(_spirals, 0.2, lambda cfg: cfg.n_classes, planar=True),
    "xor": Generator(_xor, 0.0, lambda cfg: 2, planar=True),
    "moons": Generator(_moons, 0.1, lambda cfg: 2, planar=True),
    "circles": Generator(_circles, 0.05, lambda cfg: 2, planar=True),
}


def _generate(
    cfg: DataConfig, task: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, Optional[int], Optional[np.ndarray]]:
    gen = GENERATORS[cfg.source]
    k = gen.n_classes(cfg)
    if gen.planar and cfg.n_features != 2:
        raise DataError(
            f"data.n_features is {cfg.n_features}, but data.source: {cfg.source} is a 2-D data set. Remove "
            "data.n_features (or set it to 2), or use data.source: blobs for more input dimensions."
        )
    if k is None and task == "classification":
        labelled = [name for name, g in GENERATORS.items() if g.n_classes(cfg) is not None]
        raise DataError(
            f"data.source: {cfg.source} makes real-valued regression targets{gen.targets}, but the loss "
            "(loss.kind: bce or cross_entropy) needs class labels. Use loss.kind: mse with this source, or a "
            f"classification source: {', '.join(labelled)}, or a {'/'.join(LOADERS)} file of integer labels."
        )
    if k is not None and cfg.n_samples < k:
        fewer = " or lower data.n_classes" if cfg.source in ("blobs", "spirals") else ""
        raise DataError(
            f"data.n_samples is {cfg.n_samples}, too few for the {k} classes of data.source: {cfg.source} (every "
            f"class needs at least one sample). Set data.n_samples to at least {k}{fewer}."
        )
    noise = gen.default_noise if cfg.noise is None else cfg.noise
    x, y = gen.sample(cfg, k, noise, rng)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError(
            f"data.source: {cfg.source} produced non-finite values; check data.low, data.high, data.slope, "
            "data.intercept, data.noise and data.separation for infinite or huge numbers."
        )
    if k is None:
        return x, y, None, None
    if task == "classification":
        return x, y.astype(np.int64), k, np.arange(k)
    # Regression on class data (e.g. XOR trained with MSE): a 0/1 column for two classes, one-hot rows beyond.
    return x, (y[:, None].astype(np.float64) if k == 2 else np.eye(k)[y]), None, None


# ---------------------------------------------------------------- loaders


@dataclass
class _Table:
    """Numeric inputs and raw targets read from a file, with a way to point at a row in messages."""

    x: np.ndarray  # (n, n_features) float64
    y: np.ndarray  # (n, n_targets) float64
    locate: Callable[[int], str]  # row index -> "line 7" / "row 6 of array 'y'"


def _file_error(path: Path, exc: OSError, what: str) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(
            f"{path}: no such file (data.path). Check the path; a relative data.path is resolved against the "
            f"folder of the config file. Expected {what}."
        )
    if isinstance(exc, IsADirectoryError):
        return DataError(f"{path}: is a directory (data.path); point data.path at {what}.")
    reason = exc.strerror or str(exc)
    return DataError(f"{path}: cannot be read ({reason}) (data.path). Check that the file exists and is readable.")


def _check_data_file(path: Path, what: str, max_size: Optional[int] = None) -> None:
    """A regular file (a FIFO or a device such as /dev/zero would hang or never end) within `max_size` bytes."""
    try:
        info = path.stat()
    except OSError as exc:
        raise _file_error(path, exc, what) from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{path}: is a directory (data.path); point data.path at {what}.")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path}: is not a regular file (a pipe or a device?) (data.path); point data.path at {what}.")
    if max_size is not None and info.st_size > max_size:
        raise DataError(
            f"{path}: is {info.st_size / (1 << 30):,.1f} GiB (data.path), more than the {max_size / (1 << 30):,.1f} GiB "
            "nnprobe reads as text; save the arrays with np.savez and use data.source: npz, or raise "
            "NNPROBE_MAX_MEMORY_GB."
        )


_DELIMITERS = (",", ";", "\t")


def _content(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _fields(line: str, delimiter: Optional[str]) -> list[str]:
    parts = line.split(delimiter) if delimiter else line.split()
    return [p.strip().strip('"').strip() for p in parts]


def _quote(text: str, limit: int = 24) -> str:
    """A cell as it appears in a message: short, so an error never reproduces a file's lines."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe_bad_csv(
    path: Path, lines: list[str], start: int, delimiter: Optional[str], header: Optional[list[str]]
) -> str:
    """Find the first row np.loadtxt refused and say exactly what is wrong there (only runs on the error path)."""
    width = len(header) if header is not None else None
    rows = (_fields(_content(line), delimiter) for line in lines[start:] if _content(line))
    if not any(all(_is_number(f) for f in row) for row in rows):
        # not one numeric row: not a data table at all, and quoting it could show a private file's lines
        return (
            f"{path}: is not a numeric CSV table (data.path, data.source: csv): no row below the optional header is "
            "a list of numbers separated by ',', ';', tabs or spaces. Check that data.path names the data file."
        )
    for number, line in enumerate(lines[start:], start=start + 1):
        text = _content(line)
        if not text:
            continue
        fields = _fields(text, delimiter)
        if width is None:
            width = len(fields)
        if len(fields) != width:
            return (
                f"{path}: line {number} has {len(fields)} fields where the file has {width} columns (data.path). "
                "Every row needs one value per column; fix or remove that line."
            )
        for column, field in enumerate(fields):
            if not _is_number(field):
                name = f" ({_quote(header[column])})" if header is not None else ""
                what = "is empty (a missing value)" if field == "" else f"holds {_quote(field)}, which is not a number"
                return (
                    f"{path}: line {number}, column {column}{name} {what} (data.path). Every value below the optional "
                    "header row must be numeric: fill in or drop missing values and encode categories as numbers."
                )
    return f"{path}: could not be parsed as numeric CSV (data.path). Check the delimiter and that every value is a number."


def _resolve_column(target: Union[str, int, None], header: Optional[list[str]], n_columns: int, path: Path) -> int:
    """data.target as a header name or a 0-based index (negative counts from the end); default the last column."""
    if target is None:
        return n_columns - 1
    text = str(target).strip()
    if header is not None and text in header:
        if header.count(text) > 1:
            raise DataError(
                f"{path}: data.target: the header names more than one column {text!r}; rename one or use a 0-based index."
            )
        return header.index(text)
    try:
        index = int(text)
    except ValueError:
        if header is None:
            raise DataError(
                f"{path}: data.target is {text!r}, but the file has no header row, so its columns have no names. "
                f"Set data.target to a 0-based column index (0..{n_columns - 1}) or add a header row."
            ) from None
        raise DataError(
            f"{path}: data.target: no column named {text!r}; the header has {', '.join(map(repr, header))}. "
            "Set data.target to one of these names or to a 0-based column index."
        ) from None
    if not -n_columns <= index < n_columns:
        raise DataError(
            f"{path}: data.target: column {index} does not exist; the file has {n_columns} columns "
            f"(indices 0..{n_columns - 1}). Set data.target to one of them, or leave it unset for the last column."
        )
    return index % n_columns


def _read_csv(cfg: DataConfig) -> _Table:
    """Numeric CSV via np.loadtxt: optional header row, ',', ';', tab or whitespace delimited, '#' comments."""
    path = Path(cfg.path)
    _check_data_file(path, "a CSV file", max_size=max_bytes() // 4)  # parsed floats and lines take ~4x the text
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: is not a UTF-8 text file, so it cannot be read as CSV (data.path, data.source: csv). "
            "Export it as comma-separated text, or save NumPy arrays with np.savez and use data.source: npz."
        ) from None
    except OSError as exc:
        raise _file_error(path, exc, "a CSV file") from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if _content(line)), None)
    if first is None:
        raise DataError(
            f"{path}: holds no data rows (data.path). Expected a numeric CSV file, optionally with a header row."
        )
    delimiter = next((d for d in _DELIMITERS if d in _content(lines[first])), None)
    head = _fields(_content(lines[first]), delimiter)
    header = None if all(_is_number(f) for f in head) else head
    start = first + (header is not None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns on a header-only file; that case is reported below
            table = np.loadtxt(lines[start:], delimiter=delimiter, comments="#", quotechar='"', ndmin=2, dtype=np.float64)
    except ValueError:
        raise DataError(_describe_bad_csv(path, lines, start, delimiter, header)) from None
    if table.shape[0] == 0:
        raise DataError(
            f"{path}: has a header row but no data rows (data.path). Add the data, or point data.path at the right file."
        )
    n_columns = table.shape[1]
    if header is not None and len(header) != n_columns:
        raise DataError(
            f"{path}: the header names {len(header)} columns but the rows have {n_columns} (data.path). "
            "Make the header and the rows agree."
        )
    if n_columns < 2:
        raise DataError(
            f"{path}: has a single column (data.path); nnprobe needs at least one input column besides the "
            "target column (data.target). Check the delimiter (',', ';', tab or spaces)."
        )

    def locate(row: int) -> str:
        data_lines = [i + 1 for i in range(start, len(lines)) if _content(lines[i])]
        return f"line {data_lines[row]}"

    col = _resolve_column(cfg.target, header, n_columns, path)
    bad = np.argwhere(~np.isfinite(table))
    if len(bad):
        row, column = bad[0]
        name = f" ({header[column]!r})" if header is not None else ""
        raise DataError(
            f"{path}: {locate(row)}, column {column}{name} is NaN or infinite (data.path). The data must start out "
            "finite so that any NaN nnprobe reports comes from training: drop or impute the missing values first."
        )
    return _Table(x=np.delete(table, col, axis=1), y=table[:, [col]], locate=locate)


@dataclass(frozen=True)
class _NpyHeader:
    shape: tuple
    dtype: np.dtype


def _npy_header(archive, name: str, key: str, path: Path) -> _NpyHeader:
    """The shape and dtype an archived array declares, read before the array (which may claim terabytes)."""
    try:
        with archive.zip.open(name + ".npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: array {name!r} ({key}) cannot be read ({exc}); the file looks damaged, save it again."
        ) from None
    return _NpyHeader(tuple(shape), np.dtype(dtype))


def _npz_array(archive, name: str, key: str, path: Path) -> np.ndarray:
    """One named array as float64 with at least 2 dims, or a DataError naming the key that chose it."""
    if name not in archive.files:
        held = ", ".join(map(repr, archive.files)) or "no arrays"
        raise DataError(
            f"{path}: has no array named {name!r} ({key}); it holds {held}. Set {key} to one of these names, "
            "or save the arrays as np.savez(path, x=inputs, y=targets)."
        )
    header = _npy_header(archive, name, key, path)
    if header.dtype.hasobject:
        raise DataError(
            f"{path}: array {name!r} ({key}) holds Python objects, which nnprobe does not unpickle. Save it as a "
            "numeric array, e.g. np.savez(path, x=np.asarray(x, dtype=float), y=...)."
        )
    nbytes = data_bytes(math.prod(header.shape))  # read, converted to float64, split and normalized
    if nbytes > max_bytes():
        raise DataError(
            f"{path}: array {name!r} ({key}) has shape {header.shape} of {header.dtype}: about "
            f"{nbytes / (1 << 30):,.1f} GiB once loaded, above nnprobe's limit of {max_bytes() / (1 << 30):,.1f} GiB. "
            "Check that this is the intended file, use a sample of the rows, or raise NNPROBE_MAX_MEMORY_GB."
        )
    try:
        array = archive[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: array {name!r} ({key}) cannot be read ({exc}); the file looks damaged, save it again."
        ) from None
    real = np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)
    if not (real or array.dtype == np.bool_):
        raise DataError(
            f"{path}: array {name!r} ({key}) has dtype {array.dtype}, not real numbers. Convert it to numbers "
            "(encode categories as integers) before saving."
        )
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(
            f"{path}: array {name!r} ({key}) has shape {array.shape}; expected (n_samples, n_columns), or "
            "(n_samples,) for a single column. Reshape it, e.g. a.reshape(len(a), -1), before saving."
        )
    return array.astype(np.float64)


def _read_npz(cfg: DataConfig) -> _Table:
    """Two arrays from an np.savez archive, loaded without unpickling."""
    path = Path(cfg.path)
    inputs = cfg.inputs or "x"
    target = "y" if cfg.target is None else str(cfg.target)
    _check_data_file(path, "an .npz archive written by np.savez")
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise _file_error(path, exc, "an .npz archive written by np.savez") from None
    except (ValueError, EOFError, zipfile.BadZipFile):
        raise DataError(
            f"{path}: is not a NumPy .npz archive (data.path, data.source: npz). Save the arrays with "
            "np.savez(path, x=inputs, y=targets), or use data.source: csv for a text file."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: holds a single array (.npy), not inputs and targets (data.path). Save both with "
            "np.savez(path, x=inputs, y=targets) and set data.inputs / data.target if you name them differently."
        )
    with archive:
        x = _npz_array(archive, inputs, "data.inputs", path)
        y = _npz_array(archive, target, "data.target", path)
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{path}: array {inputs!r} (data.inputs) has {x.shape[0]} rows but array {target!r} (data.target) has "
            f"{y.shape[0]}; they need one target row per input row."
        )
    if x.shape[0] == 0 or x.shape[1] == 0 or y.shape[1] == 0:
        raise DataError(
            f"{path}: the arrays are empty (shapes {x.shape} for data.inputs {inputs!r}, {y.shape} for data.target "
            f"{target!r}); there is nothing to train on."
        )
    for array, name, key in ((x, inputs, "data.inputs"), (y, target, "data.target")):
        bad = np.argwhere(~np.isfinite(array))
        if len(bad):
            raise DataError(
                f"{path}: array {name!r} ({key}) has NaN or infinite values, first at row {bad[0][0]}. The data must "
                "start out finite so that any NaN nnprobe reports comes from training: drop or impute them first."
            )
    return _Table(x=x, y=y, locate=lambda row: f"row {row} of array {target!r}")


def _recorded(cfg: DataConfig) -> _Table:
    """The config of a run recorded from a loop nnprobe does not own (nnprobe.Recorder): nothing to load."""
    raise DataError(
        "data.source: recorded: this config describes a run recorded from a hand-written training loop "
        "(nnprobe.Recorder), so there is no data to train on. `nnprobe diagnose` and `nnprobe report` read that "
        "run directory; to train here, pick a data source such as csv or npz."
    )


LOADERS: dict[str, Callable[[DataConfig], _Table]] = {"csv": _read_csv, "npz": _read_npz, "recorded": _recorded}

#: every `data.source`, in the order messages and docs/data.md list them: what config.py accepts
SOURCES = (*GENERATORS, *LOADERS)


def _class_labels(table: _Table, path: str) -> tuple[np.ndarray, int, np.ndarray]:
    """Integer labels 0..K-1 (sorted unique of the file's labels), K and the original label values."""
    y = table.y
    if y.shape[1] != 1:
        raise DataError(
            f"{path}: data.target has {y.shape[1]} columns, but classification (loss.kind: bce or cross_entropy) "
            "needs one integer label per row. Store class indices, e.g. y.argmax(axis=1) for one-hot rows."
        )
    y = y[:, 0]
    fractional = np.flatnonzero(y != np.round(y))
    if len(fractional):
        row = fractional[0]
        raise DataError(
            f"{path}: data.target: class labels must be integers, but {table.locate(row)} holds {float(y[row]):g}. If the "
            "target is a real-valued quantity use loss.kind: mse (regression); otherwise encode the classes as integers."
        )
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"{path}: data.target holds a single class ({classes[0]:g}); classification needs at least two. "
            "Check that data.target names the label column."
        )
    return labels.astype(np.int64), len(classes), classes.astype(np.int64)


# ---------------------------------------------------------------- split and normalization


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val), each in original order; val is floor(fraction*n), at least 1 when fraction > 0."""
    n_val = math.floor(fraction * n + 1e-9)  # 0.29 * 100 is 28.999...; the user means 29
    if fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    if n_val == 0:
        return np.arange(n), np.arange(0)
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _standardize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a.mean(axis=0), a.std(axis=0)


def _minmax(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a.min(axis=0), np.ptp(a, axis=0)


NORMALIZERS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "standardize": _standardize,
    "minmax": _minmax,
}


def _fit(a: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) from the training rows; a constant column maps exactly to 0 instead of dividing by ~0."""
    shift, scale = NORMALIZERS[method](a)
    constant = np.ptp(a, axis=0) == 0  # mean/std of identical floats can be off by an ulp, so test the range
    shift = np.where(constant, a[0], shift)
    scale = np.where(constant | (scale == 0), 1.0, scale)
    return shift, scale


# ---------------------------------------------------------------- entry point


def load_dataset(cfg: DataConfig, task: str, rng: np.random.Generator) -> Dataset:
    """Generate or load the data, split off validation rows and normalize both splits with training statistics."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    classes = None
    if cfg.source in GENERATORS:
        x, y, n_classes, classes = _generate(cfg, task, rng)
    elif cfg.source in LOADERS:
        table = LOADERS[cfg.source](cfg)
        x, y, n_classes = table.x, table.y, None
        if task == "classification":
            y, n_classes, classes = _class_labels(table, str(cfg.path))
    else:
        valid = ", ".join(SOURCES)
        raise DataError(f"data.source: unknown source {cfg.source!r}; valid: {valid}.")

    train, val = _split(len(x), cfg.validation_fraction, rng)
    if len(train) == 0:
        raise DataError(
            "data: no training rows are left after the validation split; add data or lower data.validation_fraction."
        )
    x_train, x_val, y_train, y_val = x[train], x[val], y[train], y[val]

    if cfg.normalize != "none":
        shift, scale = _fit(x_train, cfg.normalize)
        x_train, x_val = (x_train - shift) / scale, (x_val - shift) / scale
    target_mean = target_std = None
    if task == "regression" and cfg.normalize_target != "none":
        target_mean, target_std = _fit(y_train, cfg.normalize_target)
        y_train, y_val = (y_train - target_mean) / target_std, (y_val - target_mean) / target_std

    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        task=task,
        n_classes=n_classes,
        target_mean=target_mean,
        target_std=target_std,
        classes=classes,
    )
