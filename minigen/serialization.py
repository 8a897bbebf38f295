"""Checkpoints: ``mg.save(obj, path)`` and ``mg.load(path)``, as ``.npz`` files, never pickle.

What can be saved
-----------------
A tree of dicts (keys: str, int, float, bool, None or tuples of those), lists
and tuples whose leaves are Tensors, NumPy (or CuPy) arrays of a numeric or
boolean dtype, NumPy scalars, and Python ``int``/``float``/``bool``/``str``/``None``
— e.g. ``{"model": model.state_dict(), "optim": opt.state_dict(), "step": 3}``.
Anything else (object arrays, string arrays, sets, arbitrary classes) is
refused at save time with a ``TypeError`` naming where it sits in ``obj``.

The file
--------
A plain ``np.savez`` archive that ``np.load(path, allow_pickle=False)`` opens:

* ``__minigen__`` — a ``uint8`` array holding UTF-8 JSON: the format marker
  ``"minigen-checkpoint"``, the format ``version`` and the ``tree``, i.e. the
  nested structure with its scalars, where each array leaf is a small record
  (``{"t": "tensor", "array": name, "dtype": ..., "shape": ..., ...}``);
* one entry per array, named after its place in the tree
  (``model.fc.weight``, ``optim.state.0.exp_avg``).

Dict key order, tuple-vs-list, ``OrderedDict``, dtypes, ``requires_grad`` and
the device an array came from are recorded. An object that appears twice in
``obj`` is written once and comes back as one object; Tensors that share one
array (``model.state_dict()`` with tied weights: two detached views of one
parameter) are written once and come back as Tensors sharing one array.

Writes are atomic: the archive goes to a temporary file in the target's
directory, is flushed to disk, then renamed over ``path`` with ``os.replace``,
so a crash leaves either the old checkpoint or the new one, never half a file.

Loading
-------
``load`` reads with ``allow_pickle=False``, checks the archive (every array
is read and CRC-checked; dtypes and shapes must match the header) and
rebuilds the tree: Tensors where Tensors were saved, arrays where arrays
were saved. A damaged, truncated or foreign file raises
:class:`CheckpointError` (a ``ValueError``) that names the file and says what
is wrong. ``map_location`` moves arrays: ``"cpu"``, ``"cuda"`` or a dict such
as ``{"cuda": "cpu"}``; by default each array returns to the device it was
saved from (an error suggests ``map_location="cpu"`` if that device is absent).
"""
from __future__ import annotations

import collections
import errno
import json
import math
import os
import re
import zipfile

import numpy as np

from . import backend
from .files import atomic_write
from .autograd import Tensor

__all__ = ["save", "load", "CheckpointError", "FORMAT", "VERSION"]

FORMAT = "minigen-checkpoint"
VERSION = 1
HEADER_KEY = "__minigen__"
_ALLOWED_KINDS = "biufc"  # bool, signed int, unsigned int, float, complex
_RESERVED_NAMES = {HEADER_KEY, "file", "allow_pickle", "args", "kwds"}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"


class CheckpointError(ValueError):
    """A file that is not a readable minigen checkpoint (corrupt, truncated or foreign)."""


# --------------------------------------------------------------------------- save
def _where(path: tuple) -> str:
    """``obj['model']['fc.weight'][0]``: the place of a leaf, for error messages."""
    return "obj" + "".join(f"[{k!r}]" for k in path)


def _array_name(path: tuple) -> str:
    """A readable npz entry name for a leaf: its path joined with dots, sanitised."""
    name = ".".join(str(k) for k in path) or "root"
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:180]
    return name


class _Encoder:
    """Turns ``obj`` into a JSON-able tree plus a dict of host NumPy arrays."""

    def __init__(self):
        self.arrays: dict = {}
        self.leaf_index: dict = {}  # id(leaf object) -> its number in traversal order
        self.array_names: dict = {} # id(raw array) -> entry name (arrays shared by tensors)
        self.keepalive: list = []   # keep memoised objects alive so ids are not reused
        self.active: set = set()    # ids of containers on the current path (cycle check)

    def add_array(self, array, path):
        name = self.array_names.get(id(array))
        if name is not None:  # e.g. two detached views of one parameter (tied weights)
            return name, self.arrays[name]
        key = id(array)
        self.keepalive.append(array)
        if not isinstance(array, np.ndarray):
            array = backend.to_device(array, "cpu")  # CuPy -> host copy
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(
                f"save: the array at {_where(path)} has dtype {array.dtype} ({array.dtype.kind!r}); "
                f"checkpoints hold only numeric and boolean arrays (no object, string or "
                f"structured arrays, because they would need pickle)"
            )
        base = name = _array_name(path)
        n = 1
        while name in self.arrays or name in _RESERVED_NAMES:
            name = f"{base}~{n}"
            n += 1
        self.arrays[name] = array
        self.array_names[key] = name
        return name, array

    def leaf_record(self, kind, array, path, **extra):
        name, host = self.add_array(array, path)
        return {"t": kind, "array": name, "dtype": host.dtype.str, "shape": list(host.shape),
                "device": backend.device_of(array), **extra}

    def encode(self, obj, path=()):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            if math.isfinite(obj):
                return obj
            return {"t": "float", "value": repr(obj)}  # 'nan', 'inf', '-inf' (strict JSON)
        if isinstance(obj, Tensor) or isinstance(obj, np.ndarray) or backend.device_of(obj) == "cuda":
            return self.encode_leaf(obj, path)
        if isinstance(obj, np.generic):
            if obj.dtype.kind not in _ALLOWED_KINDS:
                raise TypeError(f"save: the NumPy scalar at {_where(path)} has dtype {obj.dtype}; "
                                f"only numeric and boolean scalars can be saved")
            return self.encode_leaf(obj, path)
        if isinstance(obj, (dict, list, tuple)):
            if id(obj) in self.active:
                raise ValueError(f"save: {_where(path)} contains itself (a reference cycle)")
            self.active.add(id(obj))
            try:
                if isinstance(obj, dict):
                    items = [[self.encode_key(k, path), self.encode(v, path + (k,))]
                             for k, v in obj.items()]
                    kind = "odict" if isinstance(obj, collections.OrderedDict) else "dict"
                    return {"t": kind, "items": items}
                kind = "list" if isinstance(obj, list) else "tuple"
                return {"t": kind, "items": [self.encode(v, path + (i,)) for i, v in enumerate(obj)]}
            finally:
                self.active.discard(id(obj))
        raise TypeError(
            f"save: cannot store a {type(obj).__module__}.{type(obj).__qualname__} at "
            f"{_where(path)}; a checkpoint holds dicts, lists, tuples, Tensors, numeric arrays, "
            f"and int/float/bool/str/None"
        )

    def encode_leaf(self, obj, path):
        index = self.leaf_index.get(id(obj))
        if index is not None:  # the same object again: a reference, not a copy
            return {"t": "ref", "leaf": index}
        if isinstance(obj, Tensor):
            record = self.leaf_record("tensor", obj.data, path, requires_grad=bool(obj.requires_grad))
        elif isinstance(obj, np.generic):
            record = self.leaf_record("scalar", np.asarray(obj), path)
        else:
            record = self.leaf_record("ndarray", obj, path)
        self.leaf_index[id(obj)] = len(self.leaf_index)
        self.keepalive.append(obj)
        return record

    def encode_key(self, key, path):
        if key is None or isinstance(key, (bool, str, int)):
            return key
        if isinstance(key, float):
            return self.encode(key, path)
        if isinstance(key, tuple):
            return {"t": "tuple", "items": [self.encode_key(k, path) for k in key]}
        raise TypeError(
            f"save: the dict at {_where(path)} has a key of type {type(key).__name__} ({key!r}); "
            f"keys must be str, int, float, bool, None or tuples of those"
        )


def save(obj, path, compress: bool = False) -> None:
    """Write ``obj`` (a nested dict/list of Tensors, arrays and scalars) to ``path`` as ``.npz``.

    The file is written exactly at ``path`` (no ``.npz`` is appended), atomically:
    temporary file in the same directory, flush and fsync, then ``os.replace``.
    ``path`` may also be a binary file object (then written in place, no
    atomicity). ``compress=True`` uses ``np.savez_compressed``. CuPy arrays
    are copied to the host. Raises ``TypeError`` for anything that cannot be
    stored without pickle, before touching the disk.
    """
    encoder = _Encoder()
    tree = encoder.encode(obj)
    header = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree},
                        allow_nan=False, separators=(",", ":"))
    arrays = {HEADER_KEY: np.frombuffer(header.encode("utf-8"), dtype=np.uint8)}
    arrays.update(encoder.arrays)
    writer = np.savez_compressed if compress else np.savez

    if hasattr(path, "write"):
        writer(path, allow_pickle=False, **arrays)
        return

    def write(tmp):
        with open(tmp, "wb") as f:
            writer(f, allow_pickle=False, **arrays)

    try:
        atomic_write(path, write, create_dirs=False)
    except FileNotFoundError as err:
        raise FileNotFoundError(errno.ENOENT, "save: the directory does not exist", err.filename) from None


# --------------------------------------------------------------------------- load
def _target_device(saved: str, map_location) -> str:
    if map_location is None:
        return saved
    if isinstance(map_location, dict):
        return map_location.get(saved, saved)
    return map_location


def _check_map_location(map_location):
    if map_location is None:
        return None
    if isinstance(map_location, dict):
        out = {}
        for saved, target in map_location.items():
            saved_name = str(saved).split(":")[0]
            if saved_name not in backend.DEVICES:
                raise ValueError(f"load: map_location key must be one of {backend.DEVICES}, "
                                 f"got {saved!r}")
            out[saved_name] = backend.check_device(target)
        return out
    if isinstance(map_location, str):
        return backend.check_device(map_location)
    raise TypeError(f"load: map_location must be None, a device name or a dict, "
                    f"got {type(map_location).__name__}")


def _read_archive(f, name: str):
    """Read the header and every array of an open checkpoint (raises CheckpointError)."""
    head = f.read(8)
    f.seek(0)
    if not head:
        raise CheckpointError(f"{name}: not a minigen checkpoint: the file is empty")
    if head.startswith(_NPY_MAGIC):
        raise CheckpointError(f"{name}: not a minigen checkpoint: it is a single .npy array "
                              f"(written by np.save); load it with np.load")
    if head[:4] not in _ZIP_MAGIC:
        raise CheckpointError(f"{name}: not a minigen checkpoint: not an .npz (zip) archive "
                              f"(first bytes {head[:8]!r})")
    try:
        with np.load(f, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):  # pragma: no cover - zip magic but not an npz
                raise CheckpointError(f"{name}: not a minigen checkpoint: not an .npz archive")
            if HEADER_KEY not in npz.files:
                shown = ", ".join(npz.files[:5]) + (", ..." if len(npz.files) > 5 else "")
                raise CheckpointError(
                    f"{name}: not a minigen checkpoint: this .npz archive has no {HEADER_KEY!r} "
                    f"entry (it holds: {shown or 'nothing'}); it was not written by minigen.save "
                    f"— read it with np.load"
                )
            raw = _read_entry(npz, HEADER_KEY, name)
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise CheckpointError(f"{name}: damaged checkpoint: the {HEADER_KEY!r} entry is "
                                      f"not a byte string")
            header = json.loads(raw.tobytes().decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise CheckpointError(f"{name}: not a minigen checkpoint: unknown format marker "
                                      f"{header.get('format') if isinstance(header, dict) else header!r}")
            version = header.get("version")
            if not isinstance(version, int) or version > VERSION or version < 1:
                raise CheckpointError(
                    f"{name}: checkpoint format version {version!r} is not supported by this "
                    f"minigen (reads versions 1..{VERSION}); upgrade minigen"
                )
            arrays = {key: _read_entry(npz, key, name) for key in npz.files if key != HEADER_KEY}
    except CheckpointError:
        raise
    except Exception as e:  # zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, ...
        detail = f"{type(e).__name__}: {e}"
        if isinstance(e, zipfile.BadZipFile) and "not a zip file" in str(e):
            detail = ("the zip directory at the end of the file is missing: the file was cut "
                      "short, e.g. by a crash or a full disk while it was copied")
        elif isinstance(e, zipfile.BadZipFile) and "CRC" in str(e):
            detail = f"a stored array is damaged ({e})"
        raise CheckpointError(f"{name}: corrupt or truncated checkpoint: {detail}") from e
    return header, arrays


def _read_entry(npz, key: str, name: str):
    """One array of the archive; a pickled object array (which would run code when unpickled) is refused."""
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        raise CheckpointError(f"{name}: refused: entry {key!r} is a pickled Python object, and unpickling "
                              f"runs whatever code it names; minigen checkpoints never contain pickles, so "
                              f"this file was not written by minigen.save (or was tampered with)") from None


class _Decoder:
    def __init__(self, name, arrays, map_location):
        self.name, self.arrays, self.map_location = name, arrays, map_location
        self.leaves: list = []  # rebuilt leaf objects in traversal order (for "ref")
        self.placed: dict = {}  # entry name -> array on its target device (shared arrays)

    def fail(self, what):
        raise CheckpointError(f"{self.name}: damaged checkpoint header: {what}")

    def decode(self, node):
        if node is None or isinstance(node, (bool, str, int, float)):
            return node
        if not isinstance(node, dict) or "t" not in node:
            self.fail(f"unexpected entry {node!r}")
        kind = node["t"]
        if kind == "dict" or kind == "odict":
            out = collections.OrderedDict() if kind == "odict" else {}
            for key, value in node["items"]:
                out[self.decode_key(key)] = self.decode(value)
            return out
        if kind == "list":
            return [self.decode(v) for v in node["items"]]
        if kind == "tuple":
            return tuple(self.decode(v) for v in node["items"])
        if kind == "float":
            return float(node["value"])
        if kind in ("tensor", "ndarray", "scalar"):
            return self.decode_leaf(node)
        if kind == "ref":
            if not 0 <= node["leaf"] < len(self.leaves):
                self.fail(f"reference to leaf {node['leaf']!r} before its definition")
            return self.leaves[node["leaf"]]
        self.fail(f"unknown entry type {kind!r}")

    def decode_key(self, key):
        if isinstance(key, dict) and key.get("t") == "tuple":
            return tuple(self.decode_key(k) for k in key["items"])
        return self.decode(key)

    def decode_leaf(self, node):
        name = node["array"]
        if name not in self.arrays:
            raise CheckpointError(f"{self.name}: damaged checkpoint: the array {name!r} named in "
                                  f"the header is missing from the archive")
        array = self.arrays[name]
        if array.dtype.str != node["dtype"] or list(array.shape) != list(node["shape"]):
            raise CheckpointError(
                f"{self.name}: damaged checkpoint: the array {name!r} has dtype {array.dtype.str} "
                f"and shape {tuple(array.shape)}, the header says {node['dtype']} and "
                f"{tuple(node['shape'])}"
            )
        kind = node["t"]
        if kind == "scalar":
            obj = array[()]
        else:
            saved_device = node.get("device", "cpu")
            device = _target_device(saved_device, self.map_location)
            if device == "cuda" and not backend.cuda_available():
                raise RuntimeError(
                    f"load: {self.name} holds arrays saved from device 'cuda' but CuPy or a GPU "
                    f"is not available here; pass map_location='cpu' to load them on the CPU"
                )
            if name not in self.placed:
                self.placed[name] = backend.to_device(array, device)
            array = self.placed[name]
            if kind == "tensor":
                obj = Tensor._wrap(array)
                if node.get("requires_grad") and array.dtype.kind == "f":
                    obj.requires_grad = True
            else:
                obj = array
        self.leaves.append(obj)
        return obj


def load(path, map_location=None):
    """Read a checkpoint written by :func:`save` and rebuild the saved structure.

    Parameters
    ----------
    path : str, os.PathLike or binary file object
    map_location : None, "cpu", "cuda" or dict
        Where arrays and Tensors go. ``None`` puts each back on the device it
        was saved from; a dict maps saved devices to devices (``{"cuda": "cpu"}``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError (a ValueError)
        The file is empty, truncated, corrupt, not an ``.npz``, or an ``.npz``
        not written by :func:`save`; the message names the file.
    """
    map_location = _check_map_location(map_location)
    if hasattr(path, "read"):
        name = getattr(path, "name", None) or repr(path)
        header, arrays = _read_archive(path, str(name))
    else:
        name = os.fspath(path)
        if not os.path.exists(name):
            raise FileNotFoundError(errno.ENOENT, "load: no such checkpoint file", name)
        if os.path.isdir(name):
            raise IsADirectoryError(errno.EISDIR, "load: expected a checkpoint file, got a "
                                                  "directory", name)
        with open(name, "rb") as f:
            header, arrays = _read_archive(f, name)
    decoder = _Decoder(name, arrays, map_location)
    try:
        return decoder.decode(header.get("tree"))
    except (CheckpointError, RuntimeError):
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise CheckpointError(
            f"{name}: damaged checkpoint header ({type(e).__name__}: {e})") from e

