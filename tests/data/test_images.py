"""Image datasets on tiny files written here: IDX and .amat parsing, file lookup,
checksums, downloads from a local mirror, binarization, the digits, Dataset.loader."""
import functools
import gzip
import hashlib
import http.server
import re
import sys
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigen.data import (DataError, Dataset, default_cache_dir, dynamic_binarize, images,
                          list_datasets, load_dataset, parse_amat, parse_idx)

TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def raises(exc, *fragments):
    return pytest.raises(exc, match="(?s)" + ".*".join(re.escape(f) for f in fragments))


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write(path, data: bytes, gz: bool):
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_idx(folder, n_train=6, n_test=4, gz=True, seed=0):
    """Tiny MNIST-like files in ``folder``; returns {split: (uint8 images, labels)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, (img_name, lab_name) in (("train", n_train, TRAIN), ("test", n_test, TEST)):
        x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        write(folder / img_name, idx_bytes(x), gz)
        write(folder / lab_name, idx_bytes(y), gz)
        out[split] = (x, y)
    return out


def amat_bytes(pixels: np.ndarray) -> bytes:
    return b"".join(b" ".join(b"%d" % v for v in row) + b"\n" for row in pixels)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=3))
def test_idx_round_trip(shape):
    arr = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    magic = 0x800 + len(shape)
    np.testing.assert_array_equal(parse_idx(idx_bytes(arr), magic), arr)


def test_idx_errors():
    data = idx_bytes(np.zeros((2, 28, 28)))
    with raises(DataError, "f.idx: not an IDX label file: magic number 2051, expected 2049"):
        parse_idx(data, 2049, "f.idx")
    with raises(DataError, "header says shape (2, 28, 28)", "1584 bytes", "has 1583", "truncated"):
        parse_idx(data[:-1], 2051)
    with raises(DataError, "truncated IDX header"):
        parse_idx(data[:10], 2051)
    with raises(DataError, "magic number None"):
        parse_idx(b"", 2051)


@pytest.mark.parametrize("gz, sub", [(True, "mnist"), (False, "mnist"), (True, "")])
def test_load_tiny_mnist(tmp_path, gz, sub):
    truth = make_idx(tmp_path / sub if sub else tmp_path, gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("mnist", split, data_dir=tmp_path, verify=False)
        x, y = truth[split]
        assert ds.images.shape == (len(x), 1, 28, 28) and ds.image_shape == (1, 28, 28)
        assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int64
        np.testing.assert_allclose(ds.images[:, 0] * 255, x, atol=1e-4)
        np.testing.assert_array_equal(ds.labels, y)
        assert ds.num_classes == 10 and ds.binarize == "none" and len(ds) == len(x)


def test_train50k_and_valid_splits(tmp_path, monkeypatch):
    x, y = make_idx(tmp_path / "fashion-mnist", n_train=7)["train"]
    monkeypatch.setitem(images.IDX_SPLITS, "train50k", ("train", 0, 5))
    monkeypatch.setitem(images.IDX_SPLITS, "valid", ("train", 5, None))
    a = load_dataset("fashion-mnist", "train50k", data_dir=tmp_path, verify=False)
    b = load_dataset("fashion-mnist", "valid", data_dir=tmp_path, verify=False)
    np.testing.assert_array_equal(np.concatenate([a.labels, b.labels]), y)
    assert len(a) == 5 and len(b) == 2
    monkeypatch.setitem(images.IDX_SPLITS, "valid", ("train", 50000, None))
    with raises(DataError, "split 'valid' is empty"):
        load_dataset("fashion-mnist", "valid", data_dir=tmp_path, verify=False)


def test_corrupt_files(tmp_path):
    folder = tmp_path / "mnist"
    make_idx(folder)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with raises(DataError, str(path), "corrupt or truncated", "gunzip"):
        load_dataset("mnist", data_dir=tmp_path, verify=False)
    write(folder / TRAIN[0], idx_bytes(np.zeros((3, 28, 28))), gz=True)
    with raises(DataError, "expected 3 labels in 0..9", "got 6"):
        load_dataset("mnist", data_dir=tmp_path, verify=False)


def test_checksum_mismatch_names_file_and_md5s(tmp_path):
    make_idx(tmp_path / "mnist")
    path = tmp_path / "mnist" / (TRAIN[0] + ".gz")
    with raises(DataError, str(path), "corrupt or truncated", md5(path),
                "expected f68b3c2dcbeaaa9fbdd348bbdeb94873", "delete it"):
        load_dataset("mnist", data_dir=tmp_path)


def test_checksum_match_loads(tmp_path, monkeypatch):
    make_idx(tmp_path / "mnist", gz=False)
    for name in TRAIN:
        monkeypatch.setitem(images.MD5["mnist"], name, md5(tmp_path / "mnist" / name))
    assert len(load_dataset("mnist", data_dir=tmp_path)) == 6


def test_missing_files_in_explicit_folder(tmp_path):
    with raises(FileNotFoundError, "train-images-idx3-ubyte, train-labels-idx1-ubyte",
                str(tmp_path / "mnist"), "explicit data_dir", images.MIRRORS["mnist"]):
        load_dataset("mnist", data_dir=tmp_path)  # download=True, but never into data_dir
    assert not (tmp_path / "mnist").exists()


def test_root_from_env_and_default(tmp_path, monkeypatch):
    make_idx(tmp_path / "mnist")
    monkeypatch.setenv("MINIGEN_DATA", str(tmp_path))
    assert len(load_dataset("mnist", "test", download=False, verify=False)) == 4
    monkeypatch.delenv("MINIGEN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "minigen"
    with raises(FileNotFoundError, str(default_cache_dir()), "download=False"):
        load_dataset("mnist", download=False)


def test_download_from_file_mirror(tmp_path, monkeypatch):
    remote, cache = tmp_path / "remote", tmp_path / "cache"
    truth = make_idx(remote)
    for name in TEST:
        monkeypatch.setitem(images.MD5["mnist"], name + ".gz", md5(remote / (name + ".gz")))
    monkeypatch.setenv("MINIGEN_DATA", str(cache))
    monkeypatch.setenv("MINIGEN_MIRROR_MNIST", remote.as_uri())
    ds = load_dataset("mnist", "test")
    np.testing.assert_array_equal(ds.labels, truth["test"][1])
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(n + ".gz" for n in TEST)
    # a wrong checksum leaves nothing behind
    with raises(DataError, "download", "train-images-idx3-ubyte.gz", "corrupt or truncated",
                "expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_dataset("mnist", "train")
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(n + ".gz" for n in TEST)
    # a file the mirror lacks: the error names the URL and the way out
    with raises(DataError, "could not download", "nowhere/train-images-idx3-ubyte.gz",
                "--data-dir"):
        load_dataset("mnist", "train", mirror=(tmp_path / "nowhere").as_uri())


def test_download_over_http(tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    pixels = np.random.default_rng(0).integers(0, 2, (3, 784))
    write(remote / "binarized_mnist_valid.amat", amat_bytes(pixels), gz=False)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(remote)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        monkeypatch.setenv("MINIGEN_DATA", str(tmp_path / "cache"))
        ds = load_dataset("binarized-mnist", "valid", mirror=url, verify=False)
        np.testing.assert_array_equal(ds.images.reshape(3, 784), pixels)
        with raises(DataError, url + "binarized_mnist_test.amat", "404"):
            load_dataset("binarized-mnist", "test", mirror=url, verify=False)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("gz", [True, False])
def test_binarized_mnist(tmp_path, gz):
    pixels = np.random.default_rng(1).integers(0, 2, (5, 784))
    write(tmp_path / "binarized-mnist" / "binarized_mnist_train.amat", amat_bytes(pixels), gz)
    ds = load_dataset("binarized-mnist", data_dir=tmp_path, verify=False)
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == np.float32
    assert ds.labels is None and ds.num_classes is None and ds.binarize == "static"
    np.testing.assert_array_equal(ds.images.reshape(5, 784), pixels)


def test_amat_parsing():
    pixels = np.random.default_rng(2).integers(0, 2, (3, 784))
    text = amat_bytes(pixels)
    np.testing.assert_array_equal(parse_amat(text.replace(b"\n", b"\r\n")), pixels)
    np.testing.assert_array_equal(parse_amat(text[:-1]), pixels)  # no final newline
    with raises(DataError, "f.amat: line 2 is not 784 space-separated 0/1 values"):
        parse_amat(text[:1568] + b"2" + text[1569:], "f.amat")
    with raises(DataError, "not a whole number of lines"):
        parse_amat(text[:-3])


def test_binarize_options(tmp_path):
    make_idx(tmp_path)
    grey = load_dataset("mnist", data_dir=tmp_path, verify=False).images
    thr = load_dataset("mnist", data_dir=tmp_path, verify=False, binarize="threshold")
    np.testing.assert_array_equal(thr.images, (grey > 0.5).astype(np.float32))
    dyn = load_dataset("mnist", data_dir=tmp_path, verify=False, binarize="dynamic")
    np.testing.assert_array_equal(dyn.images, grey)  # resampled per batch, not here
    assert (thr.binarize, dyn.binarize) == ("threshold", "dynamic")
    with raises(DataError, "binarize='static'", "name='binarized-mnist'", "'dynamic'"):
        load_dataset("mnist", data_dir=tmp_path, binarize="static")
    with raises(DataError, "binarize must be one of", "got 'bernoulli'"):
        load_dataset("mnist", data_dir=tmp_path, binarize="bernoulli")
    with raises(DataError, "already binary", "got 'dynamic'"):
        load_dataset("binarized-mnist", data_dir=tmp_path, binarize="dynamic")


def test_dynamic_binarize(rng):
    p = np.linspace(0, 1, 11, dtype=np.float32).reshape(1, 1, 1, 11).repeat(20000, 0)
    x = dynamic_binarize(p, rng)
    assert x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
    np.testing.assert_allclose(x.mean(0).ravel(), p[0].ravel(), atol=0.02)
    np.testing.assert_array_equal(dynamic_binarize(p, np.random.default_rng(5)),
                                  dynamic_binarize(p, np.random.default_rng(5)))


def test_dataset_loader_resamples_dynamic_binarization():
    images_ = np.full((8, 1, 2, 2), 0.5, np.float32)
    ds = Dataset("half", images_, np.arange(8), 8, "dynamic")
    first = [x for x, _ in ds.loader(4, seed=1)]
    again = [x for x, _ in ds.loader(4, seed=1)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert set(np.unique(np.concatenate(first))) == {0.0, 1.0}
    loader = ds.loader(8, shuffle=False)
    a, b = next(loader.batches())[0], next(loader.batches())[0]  # epochs 0 and 1 differ
    assert not np.array_equal(a, b)
    unlabelled = Dataset("static", (images_ > 0).astype(np.float32), None, None, "static")
    batch = next(iter(unlabelled.loader(3)))
    assert isinstance(batch, np.ndarray) and batch.shape == (3, 1, 2, 2)


def test_dataset_validation():
    with raises(DataError, "images must be float32 (N, C, H, W) (or points (N, D)), got float64 (2, 3)"):
        Dataset("x", np.zeros((2, 3)), None, None)
    with raises(DataError, "images must be float32 (N, C, H, W) (or points (N, D)), got float32 (2, 3, 4)"):
        Dataset("x", np.zeros((2, 3, 4), np.float32), None, None)
    assert Dataset("moons", np.zeros((5, 2), np.float32), None, None).image_shape == (2,)
    with raises(DataError, "labels must have shape (2,), got (3,)"):
        Dataset("x", np.zeros((2, 1, 2, 2), np.float32), np.zeros(3, np.int64), 3)


def test_digits_splits():
    train, test, every = (load_dataset("digits", s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (1500, 297, 1797)
    assert train.image_shape == (1, 8, 8) and train.images.dtype == np.float32
    assert 0 <= every.images.min() and every.images.max() == 1.0
    np.testing.assert_array_equal(train.images, load_dataset("digits", "train").images)

    def rows(*parts):  # (image, label) rows in a canonical order
        a = np.concatenate([np.column_stack([d.images.reshape(len(d), -1), d.labels])
                            for d in parts])
        return a[np.lexsort(a.T[::-1])]

    np.testing.assert_array_equal(rows(train, test), rows(every))  # a partition of all
    assert np.bincount(train.labels, minlength=10).min() > 100


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with raises(DataError, "scikit-learn", "pip install minigen[data]", "pip install scikit-learn"):
        load_dataset("digits")


def test_name_and_split_errors():
    with raises(DataError, "unknown dataset 'ring8'", "load_toy"):
        load_dataset("ring8")
    with raises(DataError, "mnist: unknown split 'validation'", "'train50k', 'valid'"):
        load_dataset("mnist", "validation")
    with raises(DataError, "binarized-mnist: unknown split 'train50k'"):
        load_dataset("binarized-mnist", "train50k")


def test_list_datasets():
    names = list_datasets()
    assert {"digits", "mnist", "fashion-mnist", "binarized-mnist", "ring8", "grid25",
            "moons", "swissroll", "checkerboard"} <= set(names)
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())
