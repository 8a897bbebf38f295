"""Image datasets: scikit-learn's 8x8 digits, MNIST, Fashion-MNIST, binarized MNIST.

Every dataset comes back as a ``Dataset``: float32 images (N, C, H, W) in
[0, 1], int64 labels or None. Splits:

* ``digits`` (1797 images, 1x8x8, needs scikit-learn): "train" = the first 1500
  of a permutation seeded with 0, "test" = the other 297, "all" = all, in order.
* ``mnist`` / ``fashion-mnist`` (1x28x28): "train" (60000), "test" (10000),
  and for model selection "train50k" = the first 50000 and "valid" = the last
  10000 of the training file.
* ``bars-and-stripes`` (1x4x4, computed): MacKay's Boltzmann-machine benchmark,
  the 30 binary images whose rows are all constant or whose columns are all
  constant. "train" and "test" are the same 300 images (each pattern 10 times,
  in a permutation seeded with 0): the task is to learn this distribution,
  P(v) = 1/30 on each pattern, so held-out data would add nothing.
* ``binarized-mnist``: the fixed binarization of Salakhutdinov & Murray (2008)
  in Larochelle's 50000/10000/10000 "train"/"valid"/"test" split, no labels.

Files are looked up in ``data_dir``, else ``$MINIGEN_DATA``, else
``~/.cache/minigen``; inside that root either in a folder named after the
dataset (``mnist/``, ``fashion-mnist/``, ``binarized-mnist/``) or directly in
the root, plain or gzipped. Only the default roots (no ``data_dir``) download
missing files, from ``MIRRORS`` (or ``$MINIGEN_MIRROR_<NAME>``), into
``<root>/<dataset>/``. Every file is MD5-checked on every load (~0.1 s).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..checks import check_int
from .loader import DataError, DataLoader

PathLike = Union[str, "os.PathLike[str]"]

MIRRORS: Dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "binarized-mnist": "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
}

# MD5 of every file we accept, gzipped and plain (see shared/data/README.md).
MD5: Dict[str, Dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "binarized-mnist": {
        "binarized_mnist_train.amat.gz": "55c6be0db63f47a228822edc21049d6f",
        "binarized_mnist_valid.amat.gz": "bf325c5893052cb8b540dfeb3c0c6fbe",
        "binarized_mnist_test.amat.gz": "f7f18e7c5d551792f6aab10d62a7ea74",
        "binarized_mnist_train.amat": "db28b1a6ae0fe70cbd3da91acf46e477",
        "binarized_mnist_valid.amat": "bf37822a04e94123630de6a7dfd9c9ef",
        "binarized_mnist_test.amat": "14e41ae11040adba6ab8cb291eda0dd8",
    },
}

DESCRIPTIONS: Dict[str, str] = {
    "digits": "scikit-learn's 8x8 handwritten digits, 1797 images (train 1500 / test 297)",
    "mnist": "MNIST handwritten digits 28x28, train 60000 / test 10000",
    "fashion-mnist": "Fashion-MNIST clothing 28x28, train 60000 / test 10000",
    "binarized-mnist": "fixed binarized MNIST (Larochelle & Murray), "
                       "train 50000 / valid 10000 / test 10000",
    "bars-and-stripes": "the 30 4x4 bars-and-stripes patterns (MacKay), each 10 times; train = test",
}

# split -> (file prefix, first row, end row) of the IDX training/test files
IDX_SPLITS: Dict[str, Tuple[str, int, Optional[int]]] = {
    "train": ("train", 0, None), "train50k": ("train", 0, 50000),
    "valid": ("train", 50000, None), "test": ("t10k", 0, None)}
SPLITS: Dict[str, Tuple[str, ...]] = {
    "digits": ("train", "test", "all"), "mnist": tuple(IDX_SPLITS),
    "fashion-mnist": tuple(IDX_SPLITS), "binarized-mnist": ("train", "valid", "test"),
    "bars-and-stripes": ("train", "test")}
BINARIZE = ("none", "static", "dynamic", "threshold")
DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a download gives up


@dataclass(eq=False)  # arrays have no single truth value: compare fields by hand
class Dataset:
    """Images (N, C, H, W) float32 in [0, 1] with optional int64 labels — or, for the 2-D toy
    densities, points (N, D) (see :func:`minigen.data.toy_dataset`).

    ``binarize``: "none" (grey levels), "static" (fixed 0/1 images),
    "threshold" (0/1 images from grey > 0.5) or "dynamic" (grey images; every
    batch from ``loader()`` is resampled as Bernoulli(images)).
    """

    name: str
    images: np.ndarray
    labels: Optional[np.ndarray]
    num_classes: Optional[int]
    binarize: str = "none"

    def __post_init__(self) -> None:
        if self.images.ndim not in (2, 4) or self.images.dtype != np.float32:
            raise DataError(f"Dataset {self.name!r}: images must be float32 (N, C, H, W) (or points (N, D)), "
                            f"got {self.images.dtype} {self.images.shape}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise DataError(f"Dataset {self.name!r}: labels must have shape ({len(self.images)},), "
                            f"got {self.labels.shape}")
        if self.binarize not in BINARIZE:
            raise DataError(f"Dataset {self.name!r}: binarize must be one of {BINARIZE}, "
                            f"got {self.binarize!r}")

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """The shape of one example: (C, H, W) for images, (D,) for points."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def loader(self, batch_size: int, shuffle: bool = True, seed: int = 0,
               drop_last: bool = False) -> DataLoader:
        """Batches of (images, labels), or of images alone when there are no labels."""
        arrays = (self.images,) if self.labels is None else (self.images, self.labels)
        transform = _binarize_first if self.binarize == "dynamic" else None
        return DataLoader(*arrays, batch_size=batch_size, shuffle=shuffle, seed=seed,
                          drop_last=drop_last, transform=transform)


def dynamic_binarize(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Bernoulli(images) sample as float32 0/1: a fresh binarization per call."""
    return (rng.random(images.shape, dtype=np.float32) < images).astype(np.float32)


def _binarize_first(batch: tuple, rng: np.random.Generator) -> tuple:
    return (dynamic_binarize(batch[0], rng),) + batch[1:]


# ----------------------------------------------------------------------------- files


def default_cache_dir() -> Path:
    """``~/.cache/minigen``: where datasets live when neither ``data_dir`` nor $MINIGEN_DATA is given."""
    return Path.home() / ".cache" / "minigen"


def mirror_url(name: str, mirror: Optional[str] = None) -> str:
    """Base URL for ``name``: the argument, else $MINIGEN_MIRROR_<NAME>, else MIRRORS."""
    env = "MINIGEN_MIRROR_" + name.upper().replace("-", "_")
    url = mirror or os.environ.get(env) or MIRRORS[name]
    return url if url.endswith("/") else url + "/"


def _find_file(root: Path, name: str, filename: str) -> Optional[Path]:
    """``filename`` (or ``filename.gz``) in ``root/name/`` or ``root/``."""
    for folder in (root / name, root):
        for candidate in (folder / filename, folder / (filename + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _check_md5(what: str, actual: str, expected: Optional[str], hint: str) -> None:
    if expected is not None and actual != expected:
        raise DataError(f"{what} is corrupt or truncated: MD5 {actual}, expected {expected}; "
                        f"{hint}")


def _download(url: str, dest: Path, expected_md5: Optional[str]) -> None:
    """Fetch ``url`` into ``dest`` via a temp file; the file appears only if its MD5 is right."""
    tmp = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        md5 = hashlib.md5()
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
        _check_md5(f"download {url}", md5.hexdigest(), expected_md5, "nothing was saved; try again")
        os.replace(tmp, dest)
    except OSError as exc:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
        raise DataError(f"could not download {url} into {dest.parent}: {exc}. Download the file "
                        f"by hand and pass its folder as --data-dir (data_dir=...)") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _locate(name: str, files: List[str], data_dir: Optional[PathLike], download: bool,
            verify: bool, mirror: Optional[str]) -> List[Path]:
    """Paths of ``files`` of dataset ``name``, downloading them when allowed."""
    explicit = data_dir is not None
    root = Path(data_dir if explicit else os.environ.get("MINIGEN_DATA") or default_cache_dir())
    root = root.expanduser()
    paths = [_find_file(root, name, f) for f in files]
    if download and not explicit:
        for f, path in zip(files, paths):
            if path is None:
                remote = f if name == "binarized-mnist" else f + ".gz"  # what the mirror serves
                _download(mirror_url(name, mirror) + remote, root / name / remote,
                          MD5[name][remote] if verify else None)
        paths = [_find_file(root, name, f) for f in files]
    missing = [f for f, p in zip(files, paths) if p is None]
    if missing:
        why = ("an explicit data_dir is never downloaded into" if explicit
               else "download=False")
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} (plain or .gz) in {root / name} and {root} "
            f"({why}). Get them from {mirror_url(name, mirror)}")
    return paths  # type: ignore[return-value]


def _read(path: Path, name: str, verify: bool) -> bytes:
    """File contents, MD5-checked (as stored) and gunzipped."""
    raw = path.read_bytes()
    hint = "delete it and download it again"
    if verify:
        expected = MD5[name].get(path.name)
        _check_md5(str(path), hashlib.md5(raw).hexdigest(), expected, hint)
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is corrupt or truncated: cannot gunzip it ({exc}); "
                        f"{hint}") from exc


# ----------------------------------------------------------------------------- parsers


def parse_idx(data: bytes, magic: int, source: str = "<bytes>") -> np.ndarray:
    """An IDX unsigned-byte array; ``magic`` 2051 for images (N, H, W), 2049 for labels (N,)."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    got = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if got != magic:
        kind = {2051: "image", 2049: "label"}.get(magic, "IDX")
        raise DataError(f"{source}: not an IDX {kind} file: magic number {got}, expected {magic}")
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header: {len(data)} bytes, expected {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = header + int(np.prod(dims))
    if len(data) != size:
        raise DataError(f"{source}: the header says shape {dims}, i.e. {size} bytes, but the file "
                        f"has {len(data)}; it is truncated or corrupt")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def parse_amat(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Binarized-MNIST .amat text: one image per line, 784 space-separated 0/1 -> (N, 784) uint8."""
    text = data.replace(b"\r\n", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    if len(text) % 1568:  # "v v ... v\n": 784 values and 784 separators
        raise DataError(f"{source}: {len(text)} bytes is not a whole number of lines of "
                        f"784 space-separated 0/1 values (1568 bytes each)")
    rows = np.frombuffer(text, np.uint8).reshape(-1, 1568)
    separators = np.full(784, ord(" "), np.uint8)
    separators[-1] = ord("\n")
    values = rows[:, 0::2] - np.uint8(ord("0"))  # '0'/'1' -> 0/1, anything else wraps high
    bad = ~((rows[:, 1::2] == separators).all(1) & (values <= 1).all(1))
    if bad.any():
        raise DataError(f"{source}: line {np.flatnonzero(bad)[0] + 1} is not "
                        f"784 space-separated 0/1 values")
    return values


# ----------------------------------------------------------------------------- loading


def _load_digits(split: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("the 'digits' dataset needs scikit-learn: pip install minigen[data] "
                        "(or pip install scikit-learn)") from exc
    d = load_digits()
    images, labels = (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)
    if split != "all":
        perm = np.random.default_rng(0).permutation(len(images))
        keep = perm[:1500] if split == "train" else perm[1500:]
        images, labels = images[keep], labels[keep]
    return images, labels


def bars_and_stripes(size: int = 4, copies: int = 10) -> np.ndarray:
    """Every ``size`` x ``size`` image with constant rows or constant columns, ``copies`` times each,
    shuffled (seed 0): float32 (copies * (2**(size+1) - 2), 1, size, size). The all-off and all-on
    images are both bars and stripes; they are counted once, so 4x4 gives 16 + 16 - 2 = 30 patterns."""
    size, copies = (check_int(f"bars_and_stripes: {name}", value, 1, DataError)
                    for name, value in (("size", size), ("copies", copies)))
    codes = (np.arange(2 ** size)[:, None] >> np.arange(size - 1, -1, -1)) & 1     # (2**size, size)
    rows = np.repeat(codes[:, :, None], size, axis=2)          # row i constant, = bit i
    patterns = np.unique(np.concatenate([rows, rows.transpose(0, 2, 1)]), axis=0)
    images = np.tile(patterns, (copies, 1, 1))[np.random.default_rng(0).permutation(copies * len(patterns))]
    return images[:, None].astype(np.float32)


def _load_idx(name: str, split: str, paths: List[Path], verify: bool):
    images = parse_idx(_read(paths[0], name, verify), 2051, str(paths[0]))
    labels = parse_idx(_read(paths[1], name, verify), 2049, str(paths[1]))
    if len(labels) != len(images) or (len(labels) and labels.max() > 9):
        raise DataError(f"{paths[1]}: expected {len(images)} labels in 0..9 (one per image in "
                        f"{paths[0]}), got {len(labels)} with max {labels.max(initial=0)}")
    _, start, stop = IDX_SPLITS[split]
    grey = images[start:stop, None].astype(np.float32)
    grey /= 255  # in place: one float32 copy of the images, not two
    return grey, labels[start:stop].astype(np.int64)


def load_dataset(name: str, split: str = "train", data_dir: Optional[PathLike] = None,
                 download: bool = True, binarize: str = "none", *, verify: bool = True,
                 mirror: Optional[str] = None) -> Dataset:
    """Load split ``split`` of image dataset ``name`` (see the module docstring)."""
    if name not in SPLITS:
        raise DataError(f"unknown dataset {name!r}; expected one of {sorted(SPLITS)} "
                        f"(2-D toy densities are loaded with load_toy)")
    if split not in SPLITS[name]:
        raise DataError(f"{name}: unknown split {split!r}; expected one of {SPLITS[name]}")
    if binarize not in BINARIZE:
        raise DataError(f"{name}: binarize must be one of {BINARIZE}, got {binarize!r}")
    if name == "bars-and-stripes":      # already 0/1, so every binarization leaves it as it is
        return Dataset(name, bars_and_stripes(), None, None, "static")
    if name == "binarized-mnist":
        if binarize not in ("none", "static"):
            raise DataError(f"binarized-mnist is already binary (a fixed binarization); "
                            f"binarize must be 'none' or 'static', got {binarize!r}")
        filename = f"binarized_mnist_{split}.amat"
        (path,) = _locate(name, [filename], data_dir, download, verify, mirror)
        pixels = parse_amat(_read(path, name, verify), str(path))
        return Dataset(name, pixels.reshape(-1, 1, 28, 28).astype(np.float32), None, None, "static")
    if binarize == "static":
        raise DataError(f"binarize='static' for {name!r}: for the fixed (Larochelle & Murray) "
                        f"binarization of MNIST use name='binarized-mnist'; otherwise use "
                        f"binarize='dynamic' (resampled per batch) or 'threshold' (grey > 0.5)")
    if name == "digits":
        images, labels = _load_digits(split)
    else:
        prefix = IDX_SPLITS[split][0]
        files = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
        images, labels = _load_idx(name, split, _locate(name, files, data_dir, download,
                                                        verify, mirror), verify)
    if len(images) == 0:
        raise DataError(f"{name}: split {split!r} is empty (the data file is too small for it)")
    if binarize == "threshold":
        images = (images > 0.5).astype(np.float32)
    return Dataset(name, images, labels, 10, binarize)
