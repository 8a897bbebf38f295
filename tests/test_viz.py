"""minigen.viz: image grids, PNG/HTML writers, metrics reading and plotting."""
import json
import math
import os
import re

import matplotlib.image
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
from minigen import viz


def _png_ok(path):
    """The file exists, starts with the PNG signature and decodes to a non-empty image."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.size > 0
    return img


def _no_temp_files(folder):
    leftovers = [n for n in os.listdir(folder) if ".tmp" in n]
    assert leftovers == []


# --------------------------------------------------------------------------- make_grid
@settings(max_examples=40)
@given(n=st.integers(1, 12), c=st.sampled_from([None, 1, 3]), h=st.integers(1, 6),
       w=st.integers(1, 6), nrow=st.one_of(st.none(), st.integers(1, 14)),
       padding=st.integers(0, 3))
def test_make_grid_shape_arithmetic(n, c, h, w, nrow, padding):
    shape = (n, h, w) if c is None else (n, c, h, w)
    images = np.random.default_rng(0).random(shape)
    grid = viz.make_grid(images, nrow=nrow, padding=padding)
    per_row = min(math.ceil(math.sqrt(n)) if nrow is None else nrow, n)
    rows = math.ceil(n / per_row)
    expected = (rows * (h + padding) + padding, per_row * (w + padding) + padding)
    if c == 3:
        expected += (3,)
    assert grid.shape == expected
    assert grid.dtype == np.float64
    assert grid.min() >= 0.0 and grid.max() <= 1.0


def test_make_grid_places_each_image_at_its_offset():
    n, h, w, pad = 7, 3, 4, 2
    images = np.stack([np.full((h, w), (k + 1) / 10.0) for k in range(n)])
    images[:, 0, 0] = 0.0  # mark each top-left corner
    grid = viz.make_grid(images, nrow=3, padding=pad, pad_value=1.0)
    assert grid.shape == (3 * (h + pad) + pad, 3 * (w + pad) + pad)
    for k in range(n):
        top, left = pad + (k // 3) * (h + pad), pad + (k % 3) * (w + pad)
        np.testing.assert_array_equal(grid[top:top + h, left:left + w], images[k])
        assert grid[top, left] == 0.0
        # the padding just above and left of the image is pad_value
        assert grid[top - 1, left] == 1.0 and grid[top, left - 1] == 1.0
    # the two empty cells of the last row are pad_value
    empty = grid[pad + 2 * (h + pad):, pad + 1 * (w + pad):]
    assert np.all(empty == 1.0)


def test_make_grid_grey_vs_rgb_and_channel_order():
    grey = viz.make_grid(np.zeros((4, 1, 5, 5)), padding=0)
    grey3 = viz.make_grid(np.zeros((4, 5, 5)), padding=0)
    assert grey.shape == grey3.shape == (10, 10)
    rgb_in = np.zeros((1, 3, 2, 2))
    rgb_in[0, 0] = 1.0  # pure red
    rgb = viz.make_grid(rgb_in, padding=1, pad_value=0.5)
    assert rgb.shape == (4, 4, 3)
    np.testing.assert_array_equal(rgb[1, 1], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(rgb[0, 0], [0.5, 0.5, 0.5])


def test_make_grid_clips_and_cleans_values():
    images = np.array([[[-1.0, 2.0], [np.nan, 0.25]]])
    grid = viz.make_grid(images, padding=0)
    np.testing.assert_array_equal(grid, [[0.0, 1.0], [0.0, 0.25]])


def test_make_grid_accepts_tensors_and_lists():
    data = np.random.default_rng(1).random((5, 1, 3, 3)).astype(np.float32)
    expected = viz.make_grid(data)
    np.testing.assert_array_equal(viz.make_grid(mg.tensor(data)), expected)
    np.testing.assert_array_equal(viz.make_grid(mg.tensor(data, requires_grad=True)), expected)
    np.testing.assert_array_equal(viz.make_grid(data.tolist()), expected)
    # 0/1 integer (binarised) images are fine
    assert viz.make_grid(np.ones((2, 2, 2), dtype=np.int64)).max() == 1.0


@pytest.mark.gpu
def test_make_grid_accepts_cupy_arrays():
    import cupy

    data = np.random.default_rng(2).random((3, 3, 4, 4))
    np.testing.assert_array_equal(viz.make_grid(cupy.asarray(data)), viz.make_grid(data))


@pytest.mark.parametrize("shape, match", [
    ((8, 8), r"images: expected shape \(N, C, H, W\) or \(N, H, W\), got shape \(8, 8\)"),
    ((2, 2, 4, 4), r"C in \{1, 3\}.*got C=2 in shape \(2, 2, 4, 4\)"),
    ((2, 4, 4, 3), r"got C=4.*channels-last"),
    ((0, 1, 4, 4), r"at least one non-empty image"),
    ((1, 1, 1, 1, 1), r"got shape \(1, 1, 1, 1, 1\) \(5-D\)"),
])
def test_make_grid_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        viz.make_grid(np.zeros(shape))


@pytest.mark.parametrize("kwargs, match", [
    ({"nrow": 0}, r"nrow: expected an integer >= 1, got 0"),
    ({"nrow": 2.5}, r"nrow"),
    ({"padding": -1}, r"padding: expected an integer >= 0, got -1"),
    ({"pad_value": 2.0}, r"pad_value: expected a number in \[0, 1\]"),
])
def test_make_grid_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.make_grid(np.zeros((4, 4, 4)), **kwargs)


def test_make_grid_rejects_0_255_integers_and_strings():
    with pytest.raises(ValueError, match=r"divide 0-255 data by 255"):
        viz.make_grid(np.full((1, 2, 2), 200, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"images: expected numeric values"):
        viz.make_grid(np.array([[["a"]]]))


# --------------------------------------------------------------------------- save_image_grid
def test_save_image_grid_size_with_explicit_scale(tmp_path):
    images = np.random.default_rng(3).random((6, 1, 8, 8))
    out = viz.save_image_grid(images, tmp_path / "grid.png", nrow=3, padding=1, scale=3)
    assert out == str(tmp_path / "grid.png")
    img = _png_ok(out)
    h, w = 2 * 9 + 1, 3 * 9 + 1
    assert img.shape == (3 * h, 3 * w)  # 8-bit grey PNG
    # nearest-neighbour upscale: each source pixel becomes a 3x3 block, values kept to 8 bits
    grid = viz.make_grid(images, nrow=3, padding=1)
    np.testing.assert_allclose(img[::3, ::3], grid, atol=0.5 / 255 + 1e-6)
    _no_temp_files(tmp_path)


def test_save_image_grid_default_scale_makes_small_images_legible(tmp_path):
    digits = np.random.default_rng(4).random((64, 8, 8))  # an 8x8 grid of 8x8 digits: 82 px
    img = _png_ok(viz.save_image_grid(digits, tmp_path / "digits.png"))
    assert img.shape == (82 * 4, 82 * 4)  # smallest scale reaching 256 px
    big = np.zeros((1, 3, 300, 400))
    img = _png_ok(viz.save_image_grid(big, tmp_path / "big.png", padding=0))
    assert img.shape[:2] == (300, 400) and img.shape[2] in (3, 4)


def test_save_image_grid_overwrites_atomically_and_creates_folders(tmp_path):
    target = tmp_path / "run" / "samples" / "step.png"
    viz.save_image_grid(np.zeros((1, 4, 4)), target, scale=1)
    viz.save_image_grid(np.ones((1, 4, 4)), target, scale=1, padding=0)
    img = _png_ok(target)
    assert img.shape == (4, 4) and np.all(img == 1.0)
    _no_temp_files(target.parent)


def test_atomic_write_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "grid.png"
    viz.save_image_grid(np.zeros((1, 4, 4)), target, scale=1)
    before = target.read_bytes()

    def boom(pixels, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(viz, "_write_png", boom)
    with pytest.raises(OSError, match="disk full"):
        viz.save_image_grid(np.ones((1, 4, 4)), target, scale=1)
    assert target.read_bytes() == before  # the old file is untouched
    _no_temp_files(tmp_path)


def test_save_image_grid_bad_scale(tmp_path):
    with pytest.raises(ValueError, match=r"scale: expected an integer >= 1, got 0"):
        viz.save_image_grid(np.zeros((1, 4, 4)), tmp_path / "x.png", scale=0)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- read_jsonl
def _write_lines(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


def test_read_jsonl_tolerates_truncated_last_line(tmp_path):
    path = _write_lines(tmp_path / "metrics.jsonl",
                        '{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert viz.read_jsonl(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    # a final line without a newline that is complete is kept; NaN is allowed
    path = _write_lines(tmp_path / "m2.jsonl", '{"step": 1}\n{"step": 2, "loss": NaN}')
    rows = viz.read_jsonl(str(path))
    assert rows[0] == {"step": 1} and math.isnan(rows[1]["loss"])
    # a truncated multi-byte character at the end is tolerated too
    (tmp_path / "m3.jsonl").write_bytes(b'{"step": 1}\n{"name": "\xc3')
    assert viz.read_jsonl(tmp_path / "m3.jsonl") == [{"step": 1}]
    assert viz.read_jsonl(_write_lines(tmp_path / "empty.jsonl", "")) == []


def test_read_jsonl_garbled_middle_line_names_file_and_line(tmp_path):
    path = _write_lines(tmp_path / "metrics.jsonl",
                        '{"step": 1}\n\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 3: not valid JSON") as info:
        viz.read_jsonl(path)
    assert str(path) in str(info.value)
    path = _write_lines(tmp_path / "list.jsonl", '[1, 2]\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"line 1: expected a JSON object, got list"):
        viz.read_jsonl(path)


# --------------------------------------------------------------------------- plot_curves
def _metrics_rows():
    rows = []
    for step in range(1, 41):
        row = {"step": step, "time": 0.1 * step, "epoch": step // 10, "loss": 1.0 / step,
               "note": "text is ignored", "flag": True}
        if step % 5 == 0:
            row["valid/loss"] = 1.2 / step  # only every fifth row
        rows.append(row)
    return rows


def test_plot_curves_from_list_with_missing_keys(tmp_path):
    out = viz.plot_curves(_metrics_rows(), tmp_path / "loss.png", title="run <1>", smooth=0.6)
    assert out == str(tmp_path / "loss.png")
    img = _png_ok(out)
    assert img.shape[1] > img.shape[0]  # two panels side by side: loss, valid/loss
    _no_temp_files(tmp_path)


def test_plot_curves_from_jsonl_path(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in _metrics_rows()) + '\n{"step": 41, "lo')
    _png_ok(viz.plot_curves(str(jsonl), tmp_path / "a.png", keys=["loss", "valid/loss", "epoch"]))
    _png_ok(viz.plot_curves(jsonl, tmp_path / "b.png", keys="loss"))
    # no x key anywhere: the row index is used
    _png_ok(viz.plot_curves([{"loss": 3.0}, {"loss": 2.0}], tmp_path / "c.png"))


def test_plot_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"keys: \['acc'\] not found.*available: \['loss'"):
        viz.plot_curves([{"step": 1, "loss": 1.0}], tmp_path / "x.png", keys=["acc"])
    with pytest.raises(ValueError, match=r"smooth: expected a number in \[0, 1\), got 1"):
        viz.plot_curves([{"step": 1, "loss": 1.0}], tmp_path / "x.png", smooth=1)
    with pytest.raises(ValueError, match=r"metrics: expected at least one row"):
        viz.plot_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"metrics\[1\]: expected a dict, got int"):
        viz.plot_curves([{"loss": 1.0}, 3], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"no numeric keys to plot"):
        viz.plot_curves([{"step": 1, "time": 2.0}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_ema_smoothing_skips_nan():
    out = viz._ema(np.array([np.nan, 1.0, 3.0, np.nan, 5.0]), 0.5)
    np.testing.assert_allclose(out, [np.nan, 1.0, 2.0, 2.0, 3.5])


# --------------------------------------------------------------------------- 2-D plots
def test_scatter_2d_writes_png(tmp_path):
    rng = np.random.default_rng(5)
    centers = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]) * 2
    samples = centers[rng.integers(0, 8, 500)] + 0.05 * rng.standard_normal((500, 2))
    samples[0] = np.nan  # dropped, not fatal
    _png_ok(viz.scatter_2d(samples, tmp_path / "s.png", title="ring", reference=centers, lim=3))
    _png_ok(viz.scatter_2d(mg.tensor(samples[1:].astype(np.float32)), tmp_path / "t.png",
                           lim=(-3, 3)))
    from minigen.data import get_toy
    _png_ok(viz.scatter_2d(samples[1:], tmp_path / "d.png", lim=3, density=get_toy("ring8").log_prob))
    with pytest.raises(ValueError, match="a density background needs lim"):
        viz.scatter_2d(samples[1:], tmp_path / "e.png", density=get_toy("ring8").log_prob)
    _no_temp_files(tmp_path)


def test_scatter_2d_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"points: expected shape \(n, 2\), got shape \(10, 3\)"):
        viz.scatter_2d(np.zeros((10, 3)), tmp_path / "s.png")
    with pytest.raises(ValueError, match=r"reference: expected shape \(n, 2\), got shape \(2,\)"):
        viz.scatter_2d(np.zeros((10, 2)), tmp_path / "s.png", reference=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"lim: expected finite limits with lo < hi"):
        viz.scatter_2d(np.zeros((10, 2)), tmp_path / "s.png", lim=(2, 1))


def test_density_2d_writes_png_and_passes_grid_points(tmp_path):
    seen = {}

    def log_prob(xy):
        seen["shape"], seen["dtype"] = xy.shape, xy.dtype
        seen["range"] = (xy.min(), xy.max())
        return -0.5 * (xy ** 2).sum(axis=1) - np.log(2 * np.pi)

    _png_ok(viz.density_2d(log_prob, tmp_path / "d.png", lim=(-3, 3), resolution=50, title="N(0, I)"))
    assert seen["shape"] == (2500, 2) and seen["dtype"] == np.float32
    assert seen["range"] == (-3.0, 3.0)
    # a Tensor-returning log-density (column vector) is fine too
    _png_ok(viz.density_2d(lambda xy: mg.tensor(-(xy ** 2).sum(axis=1, keepdims=True)),
                           tmp_path / "e.png", lim=2, resolution=20))


def test_density_2d_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"log_prob_fn\(xy\): expected shape \(100,\).*got shape \(100, 2\)"):
        viz.density_2d(lambda xy: xy, tmp_path / "d.png", resolution=10)
    with pytest.raises(ValueError, match=r"resolution: expected an integer >= 2, got 1"):
        viz.density_2d(lambda xy: xy[:, 0], tmp_path / "d.png", resolution=1)
    with pytest.raises(ValueError, match=r"log_prob_fn: expected a callable"):
        viz.density_2d("not callable", tmp_path / "d.png")


# --------------------------------------------------------------------------- write_gallery
def test_write_gallery_escapes_links_and_tabulates(tmp_path):
    figs = tmp_path / "figs"
    grid = viz.save_image_grid(np.zeros((4, 4, 4)), figs / "vae samples.png", scale=1)
    loss = viz.plot_curves([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], figs / "loss.png")
    page = tmp_path / "site" / "index.html"
    out = viz.write_gallery(page, "minigen <demo> & co", [
        {"title": "VAE <script>alert(1)</script>", "text": "First para.\n\nSecond & last.",
         "images": [("samples <b>", grid), ("loss", loss)],
         "metrics": {"nll": 1.234567, "steps": 2000, "fid": None}},
        {"title": "GAN", "images": [("missing", figs / "nope.png")],
         "metrics": {"nll": 0.000123456, "modes": 8}},
        {"title": "Notes only", "text": "no figures"},
    ], intro="Made by `minigen demo`.")
    assert out == str(page)
    text = page.read_text(encoding="utf-8")
    _no_temp_files(page.parent)

    assert "<script>" not in text.lower() and "<b>" not in text
    assert "VAE &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<h1>minigen &lt;demo&gt; &amp; co</h1>" in text
    assert "<p>First para.</p>" in text and "<p>Second &amp; last.</p>" in text
    # images are linked relative to the page's folder (percent-encoded)
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs == ["../figs/vae%20samples.png", "../figs/loss.png", "../figs/nope.png"]
    assert "file not found" in text
    # summary table: rows are sections with metrics, columns the union of names
    table = text[text.index("<table"):text.index("</table>")]
    assert re.findall(r"<thead>.*</thead>", table)[0].count("<th>") == 5  # section, nll, steps, fid, modes
    assert "<td>1.235</td>" in table and "<td>2000</td>" in table
    assert "<td>0.0001235</td>" in table and "<td>8</td>" in table
    assert "Notes only</th>" not in table
    # self-contained: no scripts, no external resources
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_write_gallery_bad_sections(tmp_path):
    page = tmp_path / "index.html"
    with pytest.raises(ValueError, match=r"sections\[0\]: unknown keys \['imgs'\]"):
        viz.write_gallery(page, "t", [{"title": "a", "imgs": []}])
    with pytest.raises(ValueError, match=r"sections\[1\]: missing the required key 'title'"):
        viz.write_gallery(page, "t", [{"title": "a"}, {"text": "b"}])
    pair = r"sections\[0\]\['images'\]\[0\]: expected a \(caption, png_path\) pair"
    with pytest.raises(ValueError, match=pair):
        viz.write_gallery(page, "t", [{"title": "a", "images": ["x.png"]}])
    with pytest.raises(ValueError, match=r"sections: expected a list of dicts, got dict"):
        viz.write_gallery(page, "t", {"title": "a"})
    assert not page.exists()
