"""nnprobe.data: generators against their closed forms, loaders, the split, normalization, and every DataError."""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pytest

from nnprobe.config import DataConfig
from nnprobe.data import GENERATORS, Dataset, blob_centres, load_dataset
from nnprobe.errors import DataError

TOL = 1e-12
CLASS_SOURCES = ["blobs", "spirals", "xor", "moons", "circles"]


def load(task: str = "classification", seed: int = 0, **kw) -> Dataset:
    return load_dataset(DataConfig(**kw), task, np.random.default_rng(seed))


def task_of(source: str) -> str:
    """What a generator's targets are for, read off the registry (a source that makes no classes is regression)."""
    return "regression" if GENERATORS[source].n_classes(DataConfig(source=source)) is None else "classification"


def write_npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def write_text(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- affine


def test_affine_integers_in_range_and_exact_targets():
    d = load("regression", source="affine", n_samples=2000, low=0, high=100, slope=1, intercept=1)
    x, y = d.x_train, d.y_train
    assert x.shape == (2000, 1) and y.shape == (2000, 1)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert np.array_equal(x, np.floor(x))
    assert x.min() >= 0 and x.max() < 100
    assert len(np.unique(x)) > 90  # the whole range is drawn, not a corner of it
    assert np.array_equal(y, x + 1)


def test_affine_integer_range_with_fractional_bounds():
    d = load("regression", source="affine", n_samples=500, low=0.5, high=3.5, slope=-2, intercept=0.25)
    assert set(np.unique(d.x_train)) == {1.0, 2.0, 3.0}
    assert np.array_equal(d.y_train, -2 * d.x_train + 0.25)


def test_affine_floats():
    d = load("regression", source="affine", n_samples=1000, low=-3, high=2, integer=False, slope=0.5, intercept=-1)
    x = d.x_train
    assert x.min() >= -3 and x.max() < 2
    assert not np.array_equal(x, np.floor(x))
    assert np.array_equal(d.y_train, 0.5 * x - 1)


def test_affine_noise_scale():
    d = load("regression", source="affine", n_samples=20000, integer=False, noise=0.5)
    residual = d.y_train - (d.x_train + 1)
    assert abs(residual.mean()) < 0.02
    assert residual.std() == pytest.approx(0.5, rel=0.03)


def test_affine_empty_integer_range():
    with pytest.raises(DataError, match=r"data\.low.*data\.integer"):
        load("regression", source="affine", low=0.2, high=0.8)


def test_affine_refuses_classification():
    with pytest.raises(DataError, match=r"data\.source: affine.*loss\.kind"):
        load("classification", source="affine")


# ---------------------------------------------------------------- blobs


def pairwise(points: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(a - b) for a, b in itertools.combinations(points, 2)])


@pytest.mark.parametrize("k,dim", [(2, 1), (2, 5), (3, 2), (4, 3), (5, 8), (6, 5)])
def test_blob_centres_form_a_regular_simplex(k, dim):
    d = load(source="blobs", n_samples=10 * k, n_classes=k, n_features=dim, separation=2.5, noise=0)
    assert d.x_train.shape == (10 * k, dim)
    centres = np.array([np.unique(d.x_train[d.y_train == c], axis=0)[0] for c in range(k)])
    for c in range(k):  # with noise 0 every point of a class is its centre
        assert np.all(d.x_train[d.y_train == c] == centres[c])
    np.testing.assert_allclose(pairwise(centres), 2.5, atol=TOL)
    np.testing.assert_allclose(centres.mean(axis=0), 0, atol=TOL)


@pytest.mark.parametrize("k,dim", [(3, 1), (5, 1), (4, 2), (7, 3)])
def test_blob_centres_with_too_few_dimensions(k, dim):
    centres = blob_centres(k, dim, 3.0)
    np.testing.assert_allclose(centres.mean(axis=0), 0, atol=TOL)
    neighbours = np.linalg.norm(centres - np.roll(centres, 1, axis=0), axis=1)
    if dim == 1:
        np.testing.assert_allclose(np.diff(centres[:, 0]), 3.0, atol=TOL)
    else:
        np.testing.assert_allclose(neighbours, 3.0, atol=TOL)
    assert pairwise(centres).min() >= 3.0 - TOL


def test_blobs_clusters_have_unit_std_around_their_centres():
    k, dim, n = 3, 4, 30000
    d = load(source="blobs", n_samples=n, n_classes=k, n_features=dim, separation=6)
    centres = blob_centres(k, dim, 6)
    for c in range(k):
        pts = d.x_train[d.y_train == c]
        assert np.abs(pts.mean(axis=0) - centres[c]).max() < 5 / np.sqrt(len(pts))
        np.testing.assert_allclose(pts.std(axis=0), 1.0, rtol=0.04)
    np.testing.assert_allclose(pairwise(centres), 6, atol=TOL)


# ---------------------------------------------------------------- spirals, xor, moons, circles


def cs231n_spirals(n_per_class: int, k: int, noise: float, rng: np.random.Generator):
    """The course's own loop, kept verbatim in spirit as the reference."""
    x = np.zeros((n_per_class * k, 2))
    y = np.zeros(n_per_class * k, dtype=int)
    for j in range(k):
        ix = range(n_per_class * j, n_per_class * (j + 1))
        r = np.linspace(0.0, 1, n_per_class)
        t = np.linspace(j * 4, (j + 1) * 4, n_per_class) + rng.standard_normal(n_per_class) * noise
        x[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return x, y


@pytest.mark.parametrize("noise", [0.0, None])
def test_spirals_match_cs231n(noise):
    d = load(source="spirals", n_samples=300, n_classes=3, noise=noise, seed=7)
    x_ref, y_ref = cs231n_spirals(100, 3, 0.2 if noise is None else 0.0, np.random.default_rng(7))
    np.testing.assert_allclose(d.x_train, x_ref, atol=1e-12)
    assert np.array_equal(d.y_train, y_ref)
    radius = np.linalg.norm(d.x_train, axis=1)
    assert radius.min() >= 0 and radius.max() <= 1 + TOL


def test_xor_labels_follow_quadrants():
    d = load(source="xor", n_samples=400)
    x, y = d.x_train, d.y_train
    assert np.abs(x).max() <= 1 and np.all(x != 0)
    assert np.array_equal(y, (x[:, 0] * x[:, 1] < 0).astype(int))
    quadrant = (x[:, 0] > 0) * 2 + (x[:, 1] > 0)
    assert np.array_equal(np.bincount(quadrant), [100, 100, 100, 100])


def test_moons_closed_form():
    d = load(source="moons", n_samples=201, noise=0)
    x, y = d.x_train, d.y_train
    n0, n1 = np.bincount(y)
    assert (n0, n1) == (101, 100)
    t0, t1 = np.linspace(0, np.pi, n0), np.linspace(0, np.pi, n1)
    np.testing.assert_allclose(x[y == 0], np.c_[np.cos(t0), np.sin(t0)], atol=TOL)
    np.testing.assert_allclose(x[y == 1], np.c_[1 - np.cos(t1), 0.5 - np.sin(t1)], atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(x[y == 0], axis=1), 1, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(x[y == 1] - [1, 0.5], axis=1), 1, atol=TOL)


def test_circles_closed_form():
    d = load(source="circles", n_samples=100, noise=0, factor=0.3)
    x, y = d.x_train, d.y_train
    np.testing.assert_allclose(np.linalg.norm(x[y == 0], axis=1), 1, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(x[y == 1], axis=1), 0.3, atol=TOL)
    t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    np.testing.assert_allclose(x[y == 1], 0.3 * np.c_[np.cos(t), np.sin(t)], atol=TOL)


def test_noise_moves_points_off_the_curve():
    d = load(source="circles", n_samples=2000, noise=0.05)
    radius = np.linalg.norm(d.x_train[d.y_train == 0], axis=1)
    assert 0.03 < np.std(radius - 1) < 0.07


@pytest.mark.parametrize("source", CLASS_SOURCES)
def test_classes_are_balanced_integers(source):
    k = 3 if source in ("blobs", "spirals") else 2
    d = load(source=source, n_samples=101, n_classes=k)
    assert d.y_train.dtype == np.int64 and d.y_train.shape == (101,)
    assert d.n_classes == k
    assert np.array_equal(d.classes, np.arange(k))
    counts = np.bincount(d.y_train, minlength=k)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 101
    assert d.x_train.dtype == np.float64 and d.n_features == d.x_train.shape[1]


@pytest.mark.parametrize(
    "source,default", [("affine", 0.0), ("blobs", 1.0), ("spirals", 0.2), ("xor", 0.0), ("moons", 0.1), ("circles", 0.05)]
)
def test_noise_null_is_the_documented_default(source, default):
    a = load(task_of(source), source=source, n_samples=60, noise=None, seed=3)
    b = load(task_of(source), source=source, n_samples=60, noise=default, seed=3)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert GENERATORS[source].default_noise == default


@pytest.mark.parametrize("source", list(GENERATORS))
def test_same_seed_identical_different_seed_differs(source):
    kw = dict(source=source, n_samples=50, validation_fraction=0.2, normalize="standardize")
    a, b, c = (load(task_of(source), seed=s, **kw) for s in (5, 5, 6))
    for name in ("x_train", "y_train", "x_val", "y_val"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not (np.array_equal(a.x_train, c.x_train) and np.array_equal(a.x_val, c.x_val))


def test_class_sources_as_regression_targets():
    xor = load("regression", source="xor", n_samples=20)
    assert xor.y_train.shape == (20, 1) and xor.y_train.dtype == np.float64
    assert set(np.unique(xor.y_train)) == {0.0, 1.0}
    assert xor.n_classes is None
    spirals = load("regression", source="spirals", n_samples=30, n_classes=3)
    assert spirals.y_train.shape == (30, 3)
    np.testing.assert_array_equal(spirals.y_train.sum(axis=1), 1)
    np.testing.assert_array_equal(spirals.y_train.argmax(axis=1), np.repeat([0, 1, 2], 10))


# ---------------------------------------------------------------- validation split


def ids_npz(tmp_path, n):
    """Rows whose target is their own index, so every row can be traced through the split."""
    x = np.arange(n, dtype=float)[:, None] * [1.0, 10.0]
    return write_npz(tmp_path, x=x, y=np.arange(n, dtype=float))


@pytest.mark.parametrize(
    "n,fraction,n_val", [(100, 0.29, 29), (10, 0.25, 2), (10, 0.01, 1), (2, 0.5, 1), (1, 0.5, 0), (10, 0.0, 0)]
)
def test_split_sizes_and_partition(tmp_path, n, fraction, n_val):
    d = load("regression", source="npz", path=ids_npz(tmp_path, n), validation_fraction=fraction)
    assert d.x_val.shape == (n_val, 2) and d.y_val.shape == (n_val, 1)
    ids = np.concatenate([d.y_train[:, 0], d.y_val[:, 0]])
    assert np.array_equal(np.sort(ids), np.arange(n))
    assert np.all(np.diff(d.y_train[:, 0]) > 0)  # each split keeps the file's order
    np.testing.assert_array_equal(d.x_train[:, 1], 10 * d.y_train[:, 0])  # rows stay whole


def test_split_depends_on_the_rng(tmp_path):
    path = ids_npz(tmp_path, 50)
    splits = [load("regression", seed=s, source="npz", path=path, validation_fraction=0.2) for s in range(5)]
    vals = {tuple(d.y_val[:, 0]) for d in splits}
    assert len(vals) > 1


def test_classification_val_split_shapes():
    d = load(source="moons", n_samples=40, validation_fraction=0.25)
    assert d.y_val.shape == (10,) and d.y_val.dtype == np.int64
    assert d.x_val.shape == (10, 2)


# ---------------------------------------------------------------- normalization


def test_standardize_uses_training_statistics(tmp_path):
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0], [10.0, 5.0]])
    path = write_npz(tmp_path, x=x, y=np.arange(5.0))
    d = load("regression", source="npz", path=path, validation_fraction=0.2, normalize="standardize")
    train_ids = d.y_train[:, 0].astype(int)
    (val_id,) = d.y_val[:, 0].astype(int)
    column = [x[i, 0] for i in train_ids]
    mean, std = statistics.fmean(column), statistics.pstdev(column)
    np.testing.assert_allclose(d.x_train[:, 0], [(v - mean) / std for v in column], atol=TOL)
    np.testing.assert_allclose(d.x_val[0, 0], (x[val_id, 0] - mean) / std, atol=TOL)
    assert np.all(d.x_train[:, 1] == 0) and d.x_val[0, 1] == 0  # constant column: no division by zero


def test_standardize_moments_on_train_not_val():
    d = load("regression", source="affine", n_samples=500, validation_fraction=0.3, normalize="standardize")
    np.testing.assert_allclose(d.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.x_train.std(axis=0), 1, atol=1e-12)
    assert abs(d.x_val.mean()) > 1e-6


def test_constant_feature_with_inexact_mean(tmp_path):
    """Seven copies of 0.1 have a float std of ~1e-17: dividing by it would blow the column up."""
    path = write_npz(tmp_path, x=np.c_[np.full(7, 0.1), np.arange(7.0)], y=np.full(7, 0.1))
    d = load("regression", source="npz", path=path, normalize="standardize", normalize_target="standardize")
    assert np.all(d.x_train[:, 0] == 0) and np.all(d.y_train == 0)
    assert d.target_std[0] == 1 and d.target_mean[0] == 0.1


def test_minmax_bounds_and_val_mapping(tmp_path):
    x = np.c_[[2.0, 4.0, 6.0, 8.0, 20.0], [3.0, 3.0, 3.0, 3.0, 3.0]]
    path = write_npz(tmp_path, x=x, y=np.arange(5.0))
    d = load("regression", source="npz", path=path, validation_fraction=0.2, normalize="minmax")
    train_ids = d.y_train[:, 0].astype(int)
    (val_id,) = d.y_val[:, 0].astype(int)
    lo, hi = min(x[train_ids, 0]), max(x[train_ids, 0])
    assert d.x_train[:, 0].min() == 0 and d.x_train[:, 0].max() == 1
    np.testing.assert_allclose(d.x_val[0, 0], (x[val_id, 0] - lo) / (hi - lo), atol=TOL)
    assert np.all(d.x_train[:, 1] == 0)


def test_minmax_generated():
    d = load(source="spirals", n_samples=90, normalize="minmax")
    np.testing.assert_allclose(d.x_train.min(axis=0), 0, atol=TOL)
    np.testing.assert_allclose(d.x_train.max(axis=0), 1, atol=TOL)


def test_target_standardize_round_trips():
    raw = load("regression", source="affine", n_samples=200, validation_fraction=0.1)
    d = load("regression", source="affine", n_samples=200, validation_fraction=0.1, normalize_target="standardize")
    assert raw.target_mean is None and raw.target_std is None
    np.testing.assert_allclose(d.y_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.y_train.std(axis=0), 1, atol=1e-12)
    np.testing.assert_allclose(d.target_mean, raw.y_train.mean(axis=0), atol=TOL)
    np.testing.assert_allclose(d.target_std, raw.y_train.std(axis=0), atol=TOL)
    np.testing.assert_allclose(d.y_train * d.target_std + d.target_mean, raw.y_train, atol=1e-9)
    np.testing.assert_allclose(d.y_val * d.target_std + d.target_mean, raw.y_val, atol=1e-9)


def test_target_normalization_ignored_for_classification():
    d = load(source="moons", n_samples=20, normalize_target="standardize")
    assert d.target_mean is None and d.target_std is None
    assert set(np.unique(d.y_train)) == {0, 1}


# ---------------------------------------------------------------- csv


def test_csv_with_header_target_by_name(tmp_path):
    path = write_text(tmp_path, "a,label,b\n1,10,2\n3,20,4\n5,30,6\n")
    d = load("regression", source="csv", path=path, target="label")
    np.testing.assert_array_equal(d.x_train, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(d.y_train, [[10], [20], [30]])


def with_target(cfg: DataConfig, target) -> DataConfig:
    """YAML `target: 0` reaches the loader as an int; set it past the str-typed schema field."""
    return cfg.model_copy(update={"target": target})


@pytest.mark.parametrize("target", [0, "0", "-3"])
def test_csv_without_header_target_by_index(tmp_path, target):
    path = write_text(tmp_path, "7,1,2\n8,3,4\n")
    cfg = with_target(DataConfig(source="csv", path=path), target)
    d = load_dataset(cfg, "regression", np.random.default_rng(0))
    np.testing.assert_array_equal(d.y_train, [[7], [8]])
    np.testing.assert_array_equal(d.x_train, [[1, 2], [3, 4]])


def test_csv_default_target_is_last_column(tmp_path):
    path = write_text(tmp_path, "x1,x2,y\n1,2,3\n4,5,6\n")
    d = load("regression", source="csv", path=path)
    np.testing.assert_array_equal(d.y_train, [[3], [6]])


@pytest.mark.parametrize(
    "text",
    [
        "x;y\n1;2\n3;4\n",
        "x\ty\n1\t2\n3\t4\n",
        "x y\n1 2\n3   4\n",
        '"x","y"\n"1","2"\n3,4\n',
        "\ufeffx,y\n1,2\n3,4\n",
        "# a comment\n\nx,y\n1,2  # inline\n\n3,4\n",
    ],
    ids=["semicolon", "tab", "whitespace", "quoted", "bom", "comments"],
)
def test_csv_dialects(tmp_path, text):
    path = write_text(tmp_path, text)
    d = load("regression", source="csv", path=path, target="y")
    np.testing.assert_array_equal(d.x_train, [[1], [3]])
    np.testing.assert_array_equal(d.y_train, [[2], [4]])


def test_csv_classification_labels_remapped(tmp_path):
    path = write_text(tmp_path, "x,y\n0.5,3.0\n1.5,-1\n2.5,3\n3.5,7\n")
    d = load(source="csv", path=path)
    assert d.n_classes == 3
    np.testing.assert_array_equal(d.y_train, [1, 0, 1, 2])
    np.testing.assert_array_equal(d.classes, [-1, 3, 7])
    assert d.y_train.dtype == np.int64


def test_labels_already_contiguous_are_kept(tmp_path):
    y = np.array([2, 0, 1, 1, 0])
    d = load(source="npz", path=write_npz(tmp_path, x=np.ones((5, 1)), y=y))
    np.testing.assert_array_equal(d.y_train, y)
    assert d.n_classes == 3


# ---------------------------------------------------------------- npz


def test_npz_defaults_and_shapes(tmp_path):
    x = np.arange(12.0).reshape(6, 2)
    y = np.arange(6.0)
    d = load("regression", source="npz", path=write_npz(tmp_path, x=x, y=y))
    np.testing.assert_array_equal(d.x_train, x)
    assert d.y_train.shape == (6, 1)


def test_npz_named_arrays_and_1d_inputs(tmp_path):
    path = write_npz(tmp_path, inputs=np.arange(4), labels=np.array([0, 1, 0, 1], dtype=np.int32))
    d = load(source="npz", path=path, inputs="inputs", target="labels")
    assert d.x_train.shape == (4, 1) and d.x_train.dtype == np.float64
    np.testing.assert_array_equal(d.y_train, [0, 1, 0, 1])


def test_npz_multi_target_regression(tmp_path):
    d = load("regression", source="npz", path=write_npz(tmp_path, x=np.ones((3, 2)), y=np.arange(6.0).reshape(3, 2)))
    assert d.y_train.shape == (3, 2)


# ---------------------------------------------------------------- errors


def raises(key: str, task: str = "classification", **kw) -> str:
    """Load, expecting a one-paragraph DataError that names the config key and, for a file source, the file."""
    with pytest.raises(DataError) as info:
        load(task, **kw)
    message = str(info.value)
    assert key in message, message
    if "path" in kw:
        assert kw["path"] in message, message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("source", ["csv", "npz"])
def test_missing_file(tmp_path, source):
    path = str(tmp_path / f"nope.{source}")
    assert "no such file" in raises("data.path", source=source, path=path)


@pytest.mark.parametrize("source", ["csv", "npz"])
def test_directory_instead_of_file(tmp_path, source):
    raises("data.path", source=source, path=str(tmp_path))


def test_csv_binary_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x9f binary")
    assert "UTF-8" in raises("data.path", source="csv", path=str(path))


@pytest.mark.parametrize(
    "text,where",
    [
        ("x,y\n1,2\n3,abc\n", "line 3, column 1 ('y')"),
        ("x,y\n1,2\n,4\n", "line 3, column 0 ('x') is empty"),
        ("1,2\n3,4,5\n", "line 2 has 3 fields"),
        ("x,y\n1,2\n\n# c\n3,nan\n", "line 5, column 1 ('y') is NaN"),
        ("x,y\n1,2\n3,inf\n", "line 3, column 1 ('y') is NaN or infinite"),
    ],
    ids=["text", "empty-field", "ragged", "nan", "inf"],
)
def test_csv_bad_values(tmp_path, text, where):
    path = write_text(tmp_path, text)
    assert where in raises("data.path", task="regression", source="csv", path=path)


@pytest.mark.parametrize("text", ["", "\n# only a comment\n", "x,y\n"], ids=["empty", "comment", "header-only"])
def test_csv_without_rows(tmp_path, text):
    path = write_text(tmp_path, text)
    assert "no data rows" in raises("data.path", source="csv", path=path)


def test_csv_single_column(tmp_path):
    path = write_text(tmp_path, "y\n1\n2\n")
    raises("data.target", task="regression", source="csv", path=path)


def test_csv_header_width_mismatch(tmp_path):
    path = write_text(tmp_path, "a,b\n1,2,3\n4,5,6\n")
    assert "header names 2 columns" in raises("data.path", task="regression", source="csv", path=path)


@pytest.mark.parametrize(
    "text,target,expect",
    [
        ("a,b\n1,2\n", "c", "no column named 'c'"),
        ("a,b\n1,2\n", "5", "column 5 does not exist"),
        ("1,2\n3,4\n", "label", "no header row"),
        ("a,a,b\n1,2,3\n", "a", "more than one column"),
    ],
)
def test_csv_bad_target(tmp_path, text, target, expect):
    path = write_text(tmp_path, text)
    assert expect in raises("data.target", task="regression", source="csv", path=path, target=target)


def test_csv_fractional_labels(tmp_path):
    path = write_text(tmp_path, "x,y\n1,0\n2,1\n3,0.5\n")
    message = raises("data.target", source="csv", path=path)
    assert "line 4" in message and "loss.kind: mse" in message


def test_single_class(tmp_path):
    path = write_npz(tmp_path, x=np.ones((3, 1)), y=np.ones(3))
    assert "single class" in raises("data.target", source="npz", path=path)


def test_npz_not_an_archive(tmp_path):
    path = write_text(tmp_path, "x,y\n1,2\n", name="data.npz")
    assert "not a NumPy .npz" in raises("data.path", source="npz", path=path)


def test_npz_single_array_file(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.ones((3, 2)))
    assert "np.savez" in raises("data.path", source="npz", path=str(path))


@pytest.mark.parametrize("key,kw", [("data.inputs", {"inputs": "features"}), ("data.target", {"target": "labels"})])
def test_npz_missing_array(tmp_path, key, kw):
    path = write_npz(tmp_path, x=np.ones((3, 1)), y=np.zeros(3))
    message = raises(key, task="regression", source="npz", path=path, **kw)
    assert "'x', 'y'" in message


def test_npz_object_array(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.array([{}, {}], dtype=object), y=np.zeros(2))
    assert "Python objects" in raises("data.inputs", source="npz", path=str(path))


def test_npz_string_array(tmp_path):
    path = write_npz(tmp_path, x=np.ones((2, 1)), y=np.array(["cat", "dog"]))
    assert "not real numbers" in raises("data.target", source="npz", path=path)


@pytest.mark.parametrize(
    "arrays,key,expect",
    [
        ({"x": np.ones((3, 2, 2)), "y": np.zeros(3)}, "data.inputs", "shape (3, 2, 2)"),
        ({"x": np.ones((3, 2)), "y": np.zeros(4)}, "data.target", "3 rows"),
        ({"x": np.ones((0, 2)), "y": np.zeros(0)}, "data.target", "empty"),
        ({"x": np.ones((3, 2)), "y": np.eye(3)}, "data.target", "3 columns"),
    ],
    ids=["3d-inputs", "row-mismatch", "empty", "one-hot-labels"],
)
def test_npz_bad_shapes(tmp_path, arrays, key, expect):
    path = write_npz(tmp_path, **arrays)
    assert expect in raises(key, source="npz", path=path)


@pytest.mark.parametrize(
    "key,arrays",
    [("data.inputs", {"x": [[1.0], [np.nan]], "y": [0, 1]}), ("data.target", {"x": [[1.0], [2.0]], "y": [0, np.inf]})],
)
def test_npz_nonfinite(tmp_path, key, arrays):
    path = write_npz(tmp_path, **{k: np.array(v) for k, v in arrays.items()})
    assert "first at row 1" in raises(key, task="regression", source="npz", path=path)


@pytest.mark.parametrize("source,k", [("blobs", 5), ("spirals", 4), ("moons", 2)])
def test_too_few_samples_for_classes(source, k):
    assert "at least" in raises("data.n_samples", source=source, n_samples=k - 1, n_classes=k)


@pytest.mark.parametrize("source", ["spirals", "xor", "moons", "circles"])
def test_planar_sources_reject_other_widths(source):
    raises("data.n_features", source=source, n_features=3)


def test_exact_class_count_is_enough():
    d = load(source="blobs", n_samples=4, n_classes=4, validation_fraction=0.5)
    assert len(d.y_train) == 2 and len(d.y_val) == 2


def test_unknown_task_is_a_programming_error():
    with pytest.raises(ValueError, match="task"):
        load("ranking", source="moons")


# ---------------------------------------------------------------- one registry of sources (drift tests)


def test_config_accepts_exactly_the_registered_sources():
    """data.source's allowed values are the registry's (GENERATORS, then LOADERS), in its order, and
    `recorded` (the config of a run recorded from a loop nnprobe does not own)."""
    import typing

    from nnprobe.config import DataConfig
    from nnprobe.data import GENERATORS, LOADERS, SOURCES

    assert SOURCES == (*GENERATORS, *LOADERS)
    assert typing.get_args(DataConfig.model_fields["source"].annotation) == SOURCES
    assert "recorded" in LOADERS


def test_docs_describe_every_registered_source():
    """docs/data.md: the source list in its example, a table row per generator, a paragraph per file loader."""
    import re
    from pathlib import Path

    from nnprobe.data import GENERATORS, LOADERS, SOURCES

    text = (Path(__file__).resolve().parent.parent / "docs" / "data.md").read_text(encoding="utf-8")
    listed = re.search(r"source: \w+ +# ([\w | ]+)\n", text).group(1)
    assert listed.split(" | ") == list(SOURCES)
    rows = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    assert rows == list(GENERATORS)
    assert all(f"\n**{name}** —" in text for name in LOADERS)
