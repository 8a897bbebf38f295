"""Checkpoints: exact round trips, a pickle-free file, atomic writes, clear errors on bad files."""
import collections
import io
import math
import os
import zipfile

import numpy as np
import pytest

import minigen as mg
from minigen import serialization
from minigen.serialization import CheckpointError


def sample_tree():
    w = mg.tensor(np.arange(6.0).reshape(2, 3), dtype=np.float32, requires_grad=True)
    return {
        "model": collections.OrderedDict([
            ("fc.weight", w),
            ("fc.bias", mg.tensor([0.5, -0.5], dtype=np.float64)),
            ("bn.num_batches_tracked", mg.tensor(7)),
        ]),
        "optim": {
            "state": {0: {"step": 3, "exp_avg": np.linspace(0, 1, 6).reshape(2, 3)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "amsgrad": False,
                              "params": [0, 1]}],
        },
        "arrays": [
            np.array([True, False, True]),
            np.arange(5, dtype=np.int64),
            np.array([1, 255], dtype=np.uint8),
            np.array(2.5),                           # 0-d
            np.zeros((0, 4), dtype=np.float32),      # empty
            np.array([1 + 2j], dtype=np.complex128),
            np.arange(12, dtype=np.int16).reshape(3, 4).T,  # non-contiguous
        ],
        "scalars": (1, -2 ** 100, 0.1, float("nan"), float("inf"), -float("inf"), True, False,
                    None, "ünïcødé ✓", ""),
        "numpy_scalars": [np.float32(1.5), np.int64(-3), np.bool_(True)],
        "keys": {None: 0, 3: "int", 2.5: "float", (1, "a"): "tuple", True: "bool"},
        "empty": [{}, [], ()],
        "step": 3,
    }


def assert_same(a, b, where="obj"):
    assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"  # order too
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, mg.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b, where


def test_round_trip_nested_structure(tmp_path):
    obj = sample_tree()
    path = tmp_path / "ckpt.npz"
    mg.save(obj, path)
    back = mg.load(path)
    assert_same(obj, back)
    assert isinstance(back["model"], collections.OrderedDict)
    assert back["model"]["fc.weight"].requires_grad and back["model"]["fc.weight"].is_leaf
    assert not back["model"]["fc.bias"].requires_grad
    assert back["arrays"][6].flags.writeable


def test_file_is_a_plain_npz_without_pickle(tmp_path):
    path = tmp_path / "ckpt.npz"
    mg.save(sample_tree(), str(path))
    with np.load(path, allow_pickle=False) as npz:
        assert npz.files[0] == serialization.HEADER_KEY
        assert "model.fc.weight" in npz.files and "optim.state.0.exp_avg" in npz.files
        for key in npz.files:
            assert npz[key].dtype.kind in "biufc"
        np.testing.assert_array_equal(npz["model.fc.weight"], np.arange(6.0).reshape(2, 3))
        import json
        header = json.loads(npz[serialization.HEADER_KEY].tobytes())
    assert header["format"] == "minigen-checkpoint" and header["version"] == serialization.VERSION
    with zipfile.ZipFile(path) as zf:  # every entry is a .npy, nothing else hides in the zip
        assert all(n.endswith(".npy") for n in zf.namelist())


def test_shared_objects_stay_shared(tmp_path):
    w = mg.randn(3, 3)
    a = np.ones(4)
    mg.save({"enc": w, "dec": w, "x": [a, a]}, tmp_path / "t.npz")
    back = mg.load(tmp_path / "t.npz")
    assert back["enc"] is back["dec"] and back["x"][0] is back["x"][1]
    with np.load(tmp_path / "t.npz") as npz:
        assert len(npz.files) == 3  # header + one copy of each


def test_tensors_sharing_an_array_share_it_after_load(tmp_path):
    p = mg.randn(2, 2, requires_grad=True)
    state = {"embed.weight": p.detach(), "head.weight": p.detach(), "copy": mg.tensor(p.data)}
    mg.save(state, tmp_path / "tied.npz")
    back = mg.load(tmp_path / "tied.npz")
    assert back["embed.weight"] is not back["head.weight"]
    assert back["embed.weight"].data is back["head.weight"].data
    assert back["copy"].data is not back["head.weight"].data
    with np.load(tmp_path / "tied.npz") as npz:
        assert npz.files == ["__minigen__", "embed.weight", "copy"]


def test_rng_state_and_top_level_leaves(tmp_path):
    state = mg.get_rng_state()  # 128-bit integers inside
    mg.save(state, tmp_path / "rng.npz")
    assert mg.load(tmp_path / "rng.npz") == state
    mg.save(mg.tensor([1.0, 2.0]), tmp_path / "t.npz")
    np.testing.assert_array_equal(mg.load(tmp_path / "t.npz").numpy(), [1.0, 2.0])
    mg.save(7, tmp_path / "i.npz")
    assert mg.load(tmp_path / "i.npz") == 7


def test_file_objects_and_compression(tmp_path):
    buf = io.BytesIO()
    mg.save({"a": np.arange(3)}, buf)
    buf.seek(0)
    np.testing.assert_array_equal(mg.load(buf)["a"], np.arange(3))
    big = {"zeros": np.zeros(100_000)}
    mg.save(big, tmp_path / "c.npz", compress=True)
    mg.save(big, tmp_path / "u.npz")
    assert os.path.getsize(tmp_path / "c.npz") < os.path.getsize(tmp_path / "u.npz") / 10
    assert_same(mg.load(tmp_path / "c.npz"), big)


def test_save_writes_exactly_the_given_path(tmp_path):
    mg.save({"a": 1}, tmp_path / "last.ckpt")
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert mg.load(tmp_path / "last.ckpt") == {"a": 1}


# --------------------------------------------------------------------------- atomicity
def test_crash_during_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    mg.save({"version": "old", "w": np.ones(3)}, path)
    before = path.read_bytes()

    def crash_midway(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(serialization.np, "savez", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        mg.save({"version": "new"}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert mg.load(path)["version"] == "old"


def test_crash_at_rename_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    mg.save({"version": "old"}, path)

    def no_rename(src, dst):
        raise KeyboardInterrupt  # even an interrupt cleans up

    monkeypatch.setattr(serialization.os, "replace", no_rename)
    with pytest.raises(KeyboardInterrupt):
        mg.save({"version": "new"}, path)
    monkeypatch.undo()
    assert mg.load(path) == {"version": "old"}
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_overwrite_replaces_and_keeps_permissions(tmp_path):
    path = tmp_path / "ckpt.npz"
    mg.save({"v": 1}, path)
    os.chmod(path, 0o640)
    mg.save({"v": 2}, path)
    assert mg.load(path) == {"v": 2}
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_unsavable_objects_are_refused_before_writing(tmp_path):
    path = tmp_path / "x.npz"
    cases = [
        ({"model": {"w": np.array([1, "a"], dtype=object)}}, TypeError,
         r"obj\['model'\]\['w'\] has dtype object"),
        ({"names": np.array(["a", "b"])}, TypeError, r"obj\['names'\] has dtype <U1"),
        ({"s": {1, 2}}, TypeError, r"cannot store a builtins.set at obj\['s'\]"),
        ([object()], TypeError, r"builtins.object at obj\[0\]"),
        ({mg.tensor([1.0]): 1}, TypeError, "keys must be str"),
    ]
    for obj, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            mg.save(obj, path)
    cyclic = {"a": []}
    cyclic["a"].append(cyclic)
    with pytest.raises(ValueError, match="reference cycle"):
        mg.save(cyclic, path)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- bad files
@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.npz"
    mg.save({"w": np.arange(2000.0), "b": mg.ones(10), "step": 1}, path)
    return path


def load_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        mg.load(path)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert str(path) in msg  # names the file
    return msg


@pytest.mark.parametrize("fraction", [0.002, 0.3, 0.5, 0.99])
def test_truncated_file(good_file, tmp_path, fraction):
    raw = good_file.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(raw[:max(4, int(len(raw) * fraction))])
    msg = load_error(bad)
    assert "corrupt or truncated" in msg and "cut short" in msg


def test_flipped_byte_is_detected(good_file, tmp_path):
    raw = bytearray(good_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the data of 'w'
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(raw))
    msg = load_error(bad)
    assert "corrupt" in msg and "damaged" in msg and "'w.npy'" in msg


def test_random_bytes_and_empty_file(tmp_path):
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(500))
    assert "not an .npz (zip) archive" in load_error(noise)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert "empty" in load_error(empty)
    pickled = tmp_path / "model.pt"
    import pickle
    pickled.write_bytes(pickle.dumps({"w": 1}))
    assert "not an .npz" in load_error(pickled)


def test_foreign_npz_and_npy(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3), bias=np.zeros(2))
    msg = load_error(foreign)
    assert "no '__minigen__' entry" in msg and "weights" in msg and "np.load" in msg
    npy = tmp_path / "arr.npy"
    np.save(npy, np.ones(3))
    assert "single .npy array" in load_error(npy)
    pickled_npz = tmp_path / "pickled.npz"
    np.savez(pickled_npz, __minigen__=np.array([{"a": 1}], dtype=object))
    assert "refused: entry '__minigen__' is a pickled Python object" in load_error(pickled_npz)


def test_unknown_format_version_and_damaged_header(tmp_path):
    import json

    def write(header, **arrays):
        path = tmp_path / "h.npz"
        raw = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez(path, __minigen__=raw, **arrays)
        return path

    msg = load_error(write({"format": "minigen-checkpoint", "version": 99, "tree": None}))
    assert "version 99" in msg and "upgrade" in msg
    msg = load_error(write({"format": "something-else", "version": 1, "tree": None}))
    assert "unknown format marker" in msg
    leaf = {"t": "ndarray", "array": "w", "dtype": "<f8", "shape": [3], "device": "cpu"}
    msg = load_error(write({"format": "minigen-checkpoint", "version": 1, "tree": leaf}))
    assert "'w' named in the header is missing" in msg
    msg = load_error(write({"format": "minigen-checkpoint", "version": 1, "tree": leaf},
                           w=np.ones(4)))
    assert "the header says <f8 and (3,)" in msg
    msg = load_error(write({"format": "minigen-checkpoint", "version": 1,
                            "tree": {"t": "frobnicate"}}))
    assert "unknown entry type 'frobnicate'" in msg


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError) as info:
        mg.load(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mg.save({"a": 1}, tmp_path / "no_such_dir" / "x.npz")
    with pytest.raises(IsADirectoryError):
        mg.load(tmp_path)


# --------------------------------------------------------------------------- devices
def test_map_location(tmp_path):
    mg.save({"w": mg.ones(2), "a": np.ones(2)}, tmp_path / "c.npz")
    back = mg.load(tmp_path / "c.npz", map_location="cpu")
    assert back["w"].device == "cpu" and isinstance(back["a"], np.ndarray)
    back = mg.load(tmp_path / "c.npz", map_location={"cuda": "cpu"})
    assert back["w"].device == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        mg.load(tmp_path / "c.npz", map_location="tpu")
    if not mg.cuda_available():
        with pytest.raises(RuntimeError, match="CuPy or a GPU is not available"):
            mg.load(tmp_path / "c.npz", map_location="cuda")


def test_cuda_saved_file_without_gpu_suggests_map_location(tmp_path):
    if mg.cuda_available():
        pytest.skip("needs a machine without a GPU")
    path = tmp_path / "gpu.npz"
    mg.save({"w": np.ones(2)}, path)
    with np.load(path) as npz:
        import json
        header = json.loads(npz["__minigen__"].tobytes())
        arrays = {k: npz[k] for k in npz.files if k != "__minigen__"}
    for _, node in header["tree"]["items"]:
        node["device"] = "cuda"
    np.savez(path, __minigen__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    with pytest.raises(RuntimeError, match="map_location='cpu'"):
        mg.load(path)
    np.testing.assert_array_equal(mg.load(path, map_location="cpu")["w"], np.ones(2))


@pytest.mark.gpu
def test_cuda_round_trip(tmp_path):
    import cupy
    w = mg.randn(3, 4, device="cuda", requires_grad=True)
    state = {"w": w, "buf": cupy.arange(5.0)}
    mg.save(state, tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz", allow_pickle=False) as npz:  # host arrays in the file
        np.testing.assert_array_equal(npz["w"], cupy.asnumpy(w.data))
    back = mg.load(tmp_path / "g.npz")
    assert back["w"].device == "cuda" and back["w"].requires_grad
    assert isinstance(back["buf"], cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(back["w"].data), cupy.asnumpy(w.data))
    cpu = mg.load(tmp_path / "g.npz", map_location="cpu")
    assert cpu["w"].device == "cpu" and isinstance(cpu["buf"], np.ndarray)
    gpu = mg.load(tmp_path / "g.npz", map_location="cuda")
    assert gpu["w"].device == "cuda"


class _Payload:
    """Unpickling this object would run ``touch MARKER``: the classic malicious pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_malicious_npz_is_refused_without_running_its_payload(tmp_path):
    """A real checkpoint whose weight entry is swapped for a pickled object array (a valid .npz that
    ``np.load(..., allow_pickle=True)`` would execute): refused, and the payload never runs."""
    marker = tmp_path / "pwned"
    good = tmp_path / "good.npz"
    mg.save({"w": np.ones(3)}, str(good))
    with np.load(good, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    weight = next(name for name in entries if name != serialization.HEADER_KEY)
    entries[weight] = np.array([_Payload(marker)], dtype=object)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **entries)
    msg = load_error(evil)
    assert f"refused: entry {weight!r} is a pickled Python object" in msg
    assert not marker.exists()
    with pytest.raises(ValueError):                 # what the refusal rests on: NumPy's own guard
        np.load(evil, allow_pickle=False)[weight]
    assert not marker.exists()


def test_no_code_path_uses_pickle():
    """Every ``np.load`` in the package and kernels passes ``allow_pickle=False``, and nothing imports
    pickle or its relatives (dill, joblib, shelve)."""
    import re
    from minigen.equations import python_files, source_root
    offending = []
    for folder in ("minigen", "kernels"):
        for path, full in python_files(source_root(), folder):
            text = open(full).read()
            for pattern in (r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve)\b", r"allow_pickle\s*=\s*True",
                            r"np\.load\((?![^)]*allow_pickle=False)"):
                offending += [f"{path}: {m.group(0).strip()}" for m in re.finditer(pattern, text, re.M)]
    assert offending == []
