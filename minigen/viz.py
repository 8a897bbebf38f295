"""Figures for training runs and the ``minigen demo`` gallery.

Everything here draws with matplotlib's object-oriented API (``Figure`` plus the
Agg canvas), never ``pyplot``: no global figure state, no GUI backend, so it
works headless, from threads, and inside tests. Every file is written
atomically — to a temporary file in the destination folder, then renamed over
the destination with ``os.replace`` — so a run killed mid-write never leaves a
half-written PNG or HTML page behind.

==========================  ==================================================
function                    writes / returns
==========================  ==================================================
``make_grid``               an image grid as a float array (grey or RGB)
``save_image_grid``         that grid as a PNG, upscaled for small images
``read_jsonl``              the rows of a ``metrics.jsonl`` as dicts
``plot_curves``             one panel per metric against the step (``loss.png``)
``scatter_2d``              2-D samples, optionally with reference points
``density_2d``              a heat map of ``exp(log_prob)`` on a 2-D grid
``write_gallery``           a static, self-contained HTML page of figures
==========================  ==================================================

Arrays may be NumPy arrays, minigen Tensors (anything with ``.numpy()``) or CuPy
arrays (copied to the host with ``.get()``).
"""
from __future__ import annotations

import html
import json
import math
import numbers
import os
import urllib.parse
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .checks import check_int
from .files import atomic_write, atomic_write_text

__all__ = [
    "save_figure",
    "make_grid",
    "save_image_grid",
    "read_jsonl",
    "plot_curves",
    "scatter_2d",
    "density_2d",
    "write_gallery",
]

#: ``save_image_grid`` picks a default scale so the grid's short side is at least this.
MIN_SHORT_SIDE = 256
#: ...but never upscales by more than this.
MAX_DEFAULT_SCALE = 32
#: Keys ``plot_curves`` never plots by default (besides the x key itself).
_NOT_CURVES = ("time", "epoch")


# --------------------------------------------------------------------------- helpers
def _to_numpy(x, name: str) -> np.ndarray:
    """``x`` as a NumPy array: Tensors via ``.numpy()``, CuPy arrays via ``.get()``."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.split(".")[0] == "cupy" and hasattr(x, "get"):
        return np.asarray(x.get())
    if hasattr(x, "numpy") and callable(x.numpy):
        if getattr(x, "requires_grad", False) and hasattr(x, "detach"):
            x = x.detach()
        return _to_numpy(x.numpy(), name)
    try:
        return np.asarray(x)
    except Exception as err:  # e.g. ragged nested lists
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array ({err})") from None


def _as_float_array(x, name: str) -> np.ndarray:
    """``x`` as a float64 array; a clear ValueError for non-numeric data."""
    arr = _to_numpy(x, name)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name}: expected numeric values, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected real values, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _points(x, name: str) -> np.ndarray:
    """An (n, 2) float array of 2-D points."""
    arr = _as_float_array(x, name)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected shape (n, 2), got shape {arr.shape}")
    return arr


def _limits(lim, name: str):
    """``a`` -> (-a, a); ``(lo, hi)`` -> (lo, hi); checks lo < hi and finiteness."""
    if isinstance(lim, numbers.Real) and not isinstance(lim, bool):
        lo, hi = -float(lim), float(lim)
    else:
        try:
            lo, hi = (float(v) for v in lim)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number a or a pair (lo, hi), got {lim!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}: expected finite limits with lo < hi, got ({lo}, {hi})")
    return lo, hi


def save_figure(fig: Figure, path, dpi: int = 100) -> str:
    """Render ``fig`` with the Agg canvas and write it atomically as a PNG; returns ``path``.
    Every figure of the project is written through here."""
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


# --------------------------------------------------------------------------- image grids
def make_grid(images, nrow: Optional[int] = None, padding: int = 2,
              pad_value: float = 1.0) -> np.ndarray:
    """Tile ``images`` into one picture, ``nrow`` images per row (torchvision's layout).

    ``images`` is (N, C, H, W) with C in {1, 3}, or (N, H, W) for grey; values are
    clipped to [0, 1] (NaN becomes 0). Integer input is accepted only if it is
    already in {0, 1}. ``nrow`` defaults to ``ceil(sqrt(N))``. Image ``k`` sits at
    row ``k // nrow``, column ``k % nrow``, with its top-left pixel at
    ``(padding + row * (H + padding), padding + col * (W + padding))``; the
    padding and any empty cells are ``pad_value``.

    Returns a float64 array of shape (H', W') for grey or (H', W', 3) for RGB,
    where ``H' = rows * (H + padding) + padding`` and
    ``W' = min(nrow, N) * (W + padding) + padding``.
    """
    arr = _to_numpy(images, "images")
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim != 4:
        raise ValueError(
            f"images: expected shape (N, C, H, W) or (N, H, W), got shape {arr.shape} "
            f"({arr.ndim}-D); for a single image use images[None]"
        )
    n, c, h, w = arr.shape
    if c not in (1, 3):
        hint = " (channels-last? transpose to (N, C, H, W))" if w in (1, 3) else ""
        raise ValueError(
            f"images: expected C in {{1, 3}} channels in shape (N, C, H, W), "
            f"got C={c} in shape {arr.shape}{hint}"
        )
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"images: expected at least one non-empty image, got shape {arr.shape}")
    if arr.dtype != bool and np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(
                f"images: expected floats in [0, 1], got integers in "
                f"[{arr.min()}, {arr.max()}] (dtype {arr.dtype}); divide 0-255 data by 255"
            )
    arr = _as_float_array(arr, "images")
    arr = np.clip(np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)

    nrow = math.ceil(math.sqrt(n)) if nrow is None else check_int("nrow", nrow)
    padding = check_int("padding", padding, 0)
    if not isinstance(pad_value, numbers.Real) or not 0.0 <= pad_value <= 1.0:
        raise ValueError(f"pad_value: expected a number in [0, 1], got {pad_value!r}")

    ncols = min(nrow, n)
    nrows = math.ceil(n / ncols)
    grid = np.full((c, nrows * (h + padding) + padding, ncols * (w + padding) + padding),
                   float(pad_value))
    for k in range(n):
        top = padding + (k // ncols) * (h + padding)
        left = padding + (k % ncols) * (w + padding)
        grid[:, top:top + h, left:left + w] = arr[k]
    return grid[0] if c == 1 else np.moveaxis(grid, 0, -1)


def _default_scale(height: int, width: int) -> int:
    """Smallest integer scale that makes the short side >= MIN_SHORT_SIDE (capped)."""
    return int(min(MAX_DEFAULT_SCALE, max(1, math.ceil(MIN_SHORT_SIDE / min(height, width)))))


def _write_png(pixels: np.ndarray, path: str) -> None:
    """Write a float image in [0, 1] ((H, W) grey or (H, W, 3) RGB) as an 8-bit PNG."""
    data = np.round(pixels * 255.0).astype(np.uint8)
    try:
        from PIL import Image  # a matplotlib dependency; writes compact 'L'/'RGB' PNGs
    except ImportError:  # pragma: no cover - matplotlib always brings Pillow
        import matplotlib.image

        matplotlib.image.imsave(path, data, cmap="gray", vmin=0, vmax=255, format="png")
        return
    Image.fromarray(data).save(path, format="PNG")  # uint8 (H, W) -> "L", (H, W, 3) -> "RGB"


def save_image_grid(images, path, nrow: Optional[int] = None, padding: int = 2,
                    scale: Optional[int] = None) -> str:
    """Write ``make_grid(images, nrow, padding)`` to ``path`` as a PNG; returns ``path``.

    ``scale`` is an integer nearest-neighbour upscale factor. By default it is
    the smallest one that makes the short side at least 256 px (capped at 32),
    so a grid of 8x8 digits stays legible; 1 for grids already that large.
    The PNG is 8-bit grey ('L') or RGB, so ``matplotlib.image.imread`` gives
    back (H, W) or (H, W, 3) floats in [0, 1].
    """
    grid = make_grid(images, nrow=nrow, padding=padding)
    scale = _default_scale(*grid.shape[:2]) if scale is None else check_int("scale", scale)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    return atomic_write(path, lambda tmp: _write_png(grid, tmp))


# --------------------------------------------------------------------------- metrics
def read_jsonl(path) -> list:
    """Read a ``metrics.jsonl`` file: one JSON object per line, blank lines skipped.

    A run killed mid-write can leave a truncated last line; a last line that is
    not a JSON object is dropped silently. Any such line before it is
    corruption: ValueError naming the file and the (1-based) line number.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    numbered = [(i + 1, raw) for i, raw in enumerate(lines) if raw.strip()]
    rows = []
    for pos, (lineno, raw) in enumerate(numbered):
        try:
            row = json.loads(raw.decode("utf-8"))
            problem = None if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"
        except UnicodeDecodeError as err:
            problem = f"not UTF-8 ({err.reason})"
        except json.JSONDecodeError as err:
            problem = f"not valid JSON ({err.msg} at column {err.colno})"
        if problem is None:
            rows.append(row)
        elif pos < len(numbered) - 1:
            snippet = raw[:80].decode("utf-8", errors="replace")
            raise ValueError(f"{path}: line {lineno}: {problem}: {snippet!r}")
    return rows


def _is_number(value) -> bool:
    """True for real numbers (Python or NumPy), False for bools and everything else."""
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def _ema(values: np.ndarray, smooth: float) -> np.ndarray:
    """Exponential moving average ``s = smooth * s + (1 - smooth) * v``; NaNs are skipped."""
    out = np.empty_like(values)
    state = None
    for i, v in enumerate(values):
        if math.isfinite(v):
            state = v if state is None else smooth * state + (1.0 - smooth) * v
        out[i] = np.nan if state is None else state
    return out


def plot_curves(metrics, path, keys: Optional[Sequence[str]] = None, x: Optional[str] = "step",
                title: Optional[str] = None, smooth: float = 0) -> str:
    """Plot each metric against ``x``, one panel per key (two per row); returns ``path``.

    ``metrics`` is a list of dicts or the path of a ``metrics.jsonl``. ``keys``
    defaults to every numeric key (in order of first appearance) except ``x``,
    ``"time"`` and ``"epoch"``. A row missing a key (or holding a non-number
    there) is skipped for that key only. If no row has ``x`` (or ``x`` is None)
    the row index is used; otherwise rows without ``x`` are skipped.
    ``smooth`` in [0, 1) draws an exponential moving average over the faint raw
    curve (TensorBoard's slider).
    """
    if isinstance(metrics, (str, os.PathLike)):
        metrics = read_jsonl(metrics)
    if not isinstance(metrics, (list, tuple)):
        raise ValueError(f"metrics: expected a list of dicts or a .jsonl path, got {type(metrics).__name__}")
    for i, row in enumerate(metrics):
        if not isinstance(row, dict):
            raise ValueError(f"metrics[{i}]: expected a dict, got {type(row).__name__}")
    if not metrics:
        raise ValueError("metrics: expected at least one row, got an empty list")
    if isinstance(smooth, bool) or not isinstance(smooth, numbers.Real) or not 0 <= smooth < 1:
        raise ValueError(f"smooth: expected a number in [0, 1), got {smooth!r}")

    available = []
    for row in metrics:
        for key, value in row.items():
            if key not in available and key != x and _is_number(value):
                available.append(key)
    if keys is None:
        keys = [k for k in available if k not in _NOT_CURVES]
        if not keys:
            raise ValueError(f"metrics: no numeric keys to plot besides {x!r}, 'time' and 'epoch'")
    else:
        keys = [keys] if isinstance(keys, str) else list(keys)
        if not keys:
            raise ValueError(f"keys: expected at least one key, got an empty list; available: {available}")
        missing = [k for k in keys if k not in available]
        if missing:
            raise ValueError(f"keys: {missing} not found as numeric metrics; available: {available}")

    use_index = x is None or not any(x in row for row in metrics)
    xlabel = "row" if use_index else x

    ncols = min(2, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(5.5 * ncols, 3.4 * nrows + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        xs, ys = [], []
        for i, row in enumerate(metrics):
            value = row.get(key)
            xv = i if use_index else row.get(x)
            if _is_number(value) and _is_number(xv):
                xs.append(float(xv))
                ys.append(float(value))
        xs, ys = np.asarray(xs), np.asarray(ys)
        if smooth > 0:
            (raw,) = ax.plot(xs, ys, alpha=0.3, linewidth=1)
            ax.plot(xs, _ema(ys, float(smooth)), color=raw.get_color(), linewidth=1.5,
                    label=f"EMA {smooth:g}")
            ax.legend(loc="best", fontsize="small", frameon=False)
        else:
            ax.plot(xs, ys, linewidth=1.5, marker="." if len(xs) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- 2-D plots
def scatter_2d(points, path, title: Optional[str] = None, reference=None, lim=None,
               density: Optional[Callable] = None) -> str:
    """Scatter (n, 2) ``points``; ``reference`` (m, 2) points drawn as red crosses; ``density``, a
    log-density of (k, 2) float64 points (needs ``lim``), shaded underneath.

    ``lim`` is ``a`` for [-a, a] or ``(lo, hi)`` on both axes; None autoscales.
    Non-finite points are dropped and counted in the legend. Returns ``path``.
    """
    pts = _points(points, "points")
    ref = None if reference is None else _points(reference, "reference")
    limits = None if lim is None else _limits(lim, "lim")
    if density is not None and limits is None:
        raise ValueError("scatter_2d: a density background needs lim")

    finite = np.isfinite(pts).all(axis=1)
    dropped = int((~finite).sum())
    pts = pts[finite]
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    if density is not None:
        axis = np.linspace(*limits, 200)
        gx, gy = np.meshgrid(axis, axis)
        with np.errstate(over="ignore", under="ignore"):
            shade = np.exp(np.asarray(density(np.stack([gx.ravel(), gy.ravel()], 1)), np.float64)).reshape(200, 200)
        ax.imshow(shade, origin="lower", extent=(*limits, *limits), cmap="Greys", interpolation="bilinear")
    size = float(np.clip(2000.0 / max(len(pts), 1), 1.0, 20.0))
    label = f"samples ({len(pts)})" + (f", {dropped} non-finite dropped" if dropped else "")
    ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.5, linewidths=0, label=label)
    if ref is not None:
        ax.scatter(ref[:, 0], ref[:, 1], marker="x", s=80, linewidths=2, color="tab:red",
                   label=f"reference ({len(ref)})", zorder=3)
    if limits is not None:
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def density_2d(log_prob_fn: Callable, path, lim=(-4, 4), resolution: int = 200,
               title: Optional[str] = None) -> str:
    """Heat map of ``exp(log_prob_fn(xy))`` on a ``resolution`` x ``resolution`` grid.

    ``log_prob_fn`` gets one (resolution**2, 2) float32 array of grid points
    and returns their (n,) log densities (an array or Tensor). ``lim`` is
    ``(lo, hi)`` on both axes, or ``a`` for [-a, a]. Returns ``path``.
    """
    if not callable(log_prob_fn):
        raise ValueError(f"log_prob_fn: expected a callable, got {type(log_prob_fn).__name__}")
    lo, hi = _limits(lim, "lim")
    resolution = check_int("resolution", resolution, 2)
    axis = np.linspace(lo, hi, resolution)
    gx, gy = np.meshgrid(axis, axis)  # row i is y = axis[i]
    xy = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    n = xy.shape[0]

    logp = _as_float_array(log_prob_fn(xy), "log_prob_fn(xy)")
    if logp.shape not in ((n,), (n, 1)):
        raise ValueError(f"log_prob_fn(xy): expected shape ({n},) for xy of shape {xy.shape}, "
                         f"got shape {logp.shape}")
    with np.errstate(over="ignore"):
        density = np.exp(logp.reshape(resolution, resolution))
    density = np.ma.masked_invalid(density)

    fig = Figure(figsize=(5.6, 5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(density, origin="lower", extent=(lo, hi, lo, hi), cmap="viridis",
                      interpolation="nearest", aspect="equal")
    fig.colorbar(image, ax=ax, label="density", shrink=0.85)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- HTML gallery
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #222; background: #fff; line-height: 1.5; }
h1 { margin-bottom: .25rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .25rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f4f4; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr));
           gap: 1rem; }
figure { margin: 0; padding: .5rem; border: 1px solid #eee; border-radius: 4px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: .85rem; color: #555; margin-top: .35rem; text-align: center; }
.missing { color: #b00; }
""".strip()

_SECTION_KEYS = ("title", "text", "images", "metrics")


def _format_metric(value) -> str:
    """Floats to 4 significant digits; everything else via ``str``."""
    if value is None:
        return "\u2014"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (numbers.Integral, np.integer)):
        return str(int(value))
    if isinstance(value, (numbers.Real, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _check_sections(sections) -> list:
    """Validate the ``sections`` argument of ``write_gallery``; returns it as a list."""
    if not isinstance(sections, (list, tuple)):
        raise ValueError(f"sections: expected a list of dicts, got {type(sections).__name__}")
    for i, section in enumerate(sections):
        where = f"sections[{i}]"
        if not isinstance(section, dict):
            raise ValueError(f"{where}: expected a dict, got {type(section).__name__}")
        unknown = [k for k in section if k not in _SECTION_KEYS]
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; expected some of {list(_SECTION_KEYS)}")
        if "title" not in section:
            raise ValueError(f"{where}: missing the required key 'title'")
        for j, item in enumerate(section.get("images") or ()):
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise ValueError(f"{where}['images'][{j}]: expected a (caption, png_path) pair, got {item!r}")
        metrics = section.get("metrics")
        if metrics is not None and not isinstance(metrics, dict):
            raise ValueError(f"{where}['metrics']: expected a dict, got {type(metrics).__name__}")
    return list(sections)


def _image_url(image_path, html_dir: str) -> str:
    """``image_path`` relative to the HTML file's folder, as a percent-encoded URL path."""
    image_path = os.path.abspath(os.fspath(image_path))
    try:
        rel = os.path.relpath(image_path, start=html_dir)
    except ValueError:  # Windows: a different drive; no relative path exists
        return "file:" + urllib.parse.quote(image_path.replace(os.sep, "/"))
    return urllib.parse.quote(rel.replace(os.sep, "/"))


def _metrics_table(sections: list) -> list:
    """HTML lines of the summary table (rows: sections, columns: metric names)."""
    rows = [s for s in sections if s.get("metrics")]
    if not rows:
        return []
    columns = []
    for s in rows:
        columns.extend(k for k in s["metrics"] if k not in columns)
    esc = html.escape
    lines = ['<table class="summary">', "<thead><tr><th>section</th>"
             + "".join(f"<th>{esc(str(c))}</th>" for c in columns) + "</tr></thead>", "<tbody>"]
    for s in rows:
        cells = "".join(
            f"<td>{esc(_format_metric(s['metrics'][c]))}</td>" if c in s["metrics"] else "<td></td>"
            for c in columns
        )
        lines.append(f"<tr><th>{esc(str(s['title']))}</th>{cells}</tr>")
    lines += ["</tbody>", "</table>"]
    return lines


def _paragraphs(text: str) -> list:
    """Escaped ``<p>`` elements, one per blank-line-separated block of ``text``."""
    blocks = [b.strip() for b in str(text).replace("\r\n", "\n").split("\n\n")]
    return [f"<p>{html.escape(b)}</p>" for b in blocks if b]


def write_gallery(path, title: str, sections: Iterable[dict], intro: Optional[str] = None) -> str:
    """Write a static, self-contained HTML page of figures; returns ``path``.

    ``sections`` is a list of ``{"title": str, "text": str, "images": [(caption,
    png_path), ...], "metrics": {name: value}}`` (all but ``title`` optional).
    The page starts with a table of every section's metrics (floats to 4
    significant digits), then one heading and a grid of captioned figures per
    section. Image paths are made relative to the HTML file's folder; all text
    is HTML-escaped; there is no JavaScript and nothing is loaded from elsewhere.
    """
    sections = _check_sections(sections)
    path = os.fspath(path)
    html_dir = os.path.dirname(os.path.abspath(path))
    esc = html.escape

    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(str(title))}</title>", f"<style>\n{_CSS}\n</style>", "</head>",
           "<body>", f"<h1>{esc(str(title))}</h1>"]
    if intro:
        out += _paragraphs(intro)
    out += _metrics_table(sections)
    for i, section in enumerate(sections):
        out.append(f'<section id="section-{i + 1}">')
        out.append(f"<h2>{esc(str(section['title']))}</h2>")
        if section.get("text"):
            out += _paragraphs(section["text"])
        images = section.get("images") or ()
        if images:
            out.append('<div class="figures">')
            for caption, image_path in images:
                url = esc(_image_url(image_path, html_dir))
                note = ("" if os.path.exists(os.fspath(image_path))
                        else ' <span class="missing">(file not found)</span>')
                out.append(f'<figure><a href="{url}"><img src="{url}" alt="{esc(str(caption))}" '
                           f'loading="lazy"></a><figcaption>{esc(str(caption))}{note}</figcaption></figure>')
            out.append("</div>")
        out.append("</section>")
    out += ["</body>", "</html>", ""]
    return atomic_write_text(path, "\n".join(out))
