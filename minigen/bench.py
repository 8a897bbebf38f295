"""``minigen bench``: time the kernels, through the engine, against the NumPy reference
and PyTorch.

Every case is timed as a user would run it: build tensors, call the functional
op, ``backward`` a fixed output gradient. The reference column reruns the same
code with ``MINIGEN_KERNELS=reference``; the PyTorch column runs the same
shapes with ``torch.nn.functional`` when PyTorch happens to be installed (it is
never a dependency). Times are medians after warm-up.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np

from . import backend

# (name, kind, input shape, weight shape, stride, padding, output_padding)
CONV_CASES = [
    ("c1", "conv", (64, 1, 28, 28), (64, 1, 5, 5), 2, 2, 0),
    ("c2", "conv", (64, 64, 14, 14), (128, 64, 3, 3), 1, 1, 0),
    ("pcnn", "conv", (64, 1, 28, 28), (64, 1, 7, 7), 1, 3, 0),
    ("c3", "conv", (64, 64, 28, 28), (64, 64, 3, 3), 1, 1, 0),
    ("pw", "conv", (64, 64, 28, 28), (32, 64, 1, 1), 1, 0, 0),   # a PixelCNN block's 1x1 reduction
    ("convT", "convT", (64, 128, 7, 7), (128, 64, 4, 4), 2, 1, 0),
]
# (name, batch, heads, time, head dim)
ATTENTION_CASES = [
    ("attn-T196", 64, 4, 196, 32),
    ("attn-T49", 64, 4, 49, 64),
]
#: Target ratios (minigen / PyTorch) set by the engine issue.
TARGETS = {"c2": 2.0, "c3": 2.0, "pcnn": 2.0, "convT": 2.0, "attn-T196": 2.0, "attn-T49": 1.5}
#: The RBM case: one CD-1 epoch, (examples, visible, hidden, batch); target minigen / scikit-learn.
RBM_CASE = ("rbm", 10000, 784, 500, 100)
RBM_TARGET = 1 / 1.5
#: Sampling cases (Eq. AR-4): (name, model, kwargs, image shape, samples); target naive / incremental.
SAMPLING_CASES = [
    ("pixelcnn-28", "PixelCNN", {"channels": 64, "blocks": 7}, (1, 28, 28), 16),
    ("gated-28", "GatedPixelCNN", {"channels": 32, "layers": 8}, (1, 28, 28), 16),
]
SAMPLING_TARGET = 3.0
#: One DCGAN training step (Algorithm 1, k = 1): (name, batch, width, latent dim); target minigen / PyTorch.
DCGAN_CASE = ("dcgan", 64, 64, 100)
DCGAN_TARGET = 2.0


def median_time(fn, repeat: int, warmup: int = 2, settle: float = 1.0) -> float:
    """Median wall time of ``fn()`` in seconds.

    Each block starts after ``settle`` seconds of quiet: PyTorch's OpenMP workers
    keep spinning for a while after its last call, and would otherwise steal the
    cores from whatever is timed next.
    """
    time.sleep(settle)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextmanager
def kernels(mode: str):
    """Temporarily select the kernel family (``""`` = fastest, ``"reference"``)."""
    previous = os.environ.get("MINIGEN_KERNELS")
    os.environ["MINIGEN_KERNELS"] = mode
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINIGEN_KERNELS"]
        else:
            os.environ["MINIGEN_KERNELS"] = previous


def _arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


# --------------------------------------------------------------------------- one step
def make_step(case, lib):
    """A closure running forward + backward of ``case`` with ``lib``.

    minigen and PyTorch share names and signatures (``F.conv2d``,
    ``F.conv_transpose2d``, ``F.scaled_dot_product_attention``, ``.backward``),
    so one function builds both; ``lib`` supplies only how to make a tensor on
    the device, the functional namespace and how to wait for the device.
    """
    tensor, F, sync = lib["tensor"], lib["F"], lib["sync"]
    if case[1] in ("conv", "convT"):
        name, kind, x_shape, w_shape, stride, padding, out_pad = case
        x_np, w_np = _arrays([x_shape, w_shape])
        b_np = np.zeros(w_shape[0] if kind == "conv" else w_shape[1], np.float32)
        x, w, b = (tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))

        def forward():
            if kind == "conv":
                return F.conv2d(x, w, b, stride=stride, padding=padding)
            return F.conv_transpose2d(x, w, b, stride=stride, padding=padding,
                                      output_padding=out_pad)
    else:
        name, bsz, heads, t, d = case
        q, k, v = (tensor(a, requires_grad=True) for a in _arrays([(bsz, heads, t, d)] * 3))

        def forward():
            return F.scaled_dot_product_attention(q, k, v)

    grad = tensor(_arrays([tuple(forward().shape)], seed=1)[0])

    def step():
        forward().backward(grad)
        sync()

    return step


def minigen_lib(device="cpu"):
    """minigen's side of the comparison: a ``tensor`` factory on ``device``, the functional ``F``, and a
    ``sync`` that waits for the GPU."""
    import minigen as mg
    import minigen.nn.functional as F

    def sync():
        if device == "cuda":
            backend.cupy.cuda.Device().synchronize()    # the whole device: PyTorch's work too

    return {"tensor": lambda a, requires_grad=False: mg.tensor(a, device=device,
                                                               requires_grad=requires_grad),
            "F": F, "sync": sync}


def torch_lib(device="cpu"):
    """PyTorch's side of the comparison, or None when PyTorch is not installed."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    dev = "cuda" if device == "cuda" else "cpu"

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    return {"tensor": lambda a, requires_grad=False: torch.tensor(a, device=dev,
                                                                  requires_grad=requires_grad),
            "F": F, "sync": sync}


# --------------------------------------------------------------------------- report
def header(device: str) -> dict:
    """The setup printed above the results: thread settings, device, processor and PyTorch version.

    Sets PyTorch's thread count to the number of CPUs when it is installed.
    """
    info = backend.configure_threads()
    info["device"] = device
    if device == "cuda" and backend.cuda_available():
        props = backend.cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = f"{props['name'].decode()} (CuPy {backend.cupy.__version__}, CUDA runtime " \
                      f"{backend.cupy.cuda.runtime.runtimeGetVersion()})"
    info["machine"] = platform.processor() or platform.machine()
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        info["torch"] = "not installed"
    return info


def run_cases(cases, repeat=10, device="cpu", reference=True, rounds=3, settle=1.0, log=print):
    """Time each case; minigen and PyTorch alternate for ``rounds`` blocks of
    ``repeat`` runs and each keeps its best block median, so a burst of noise
    from elsewhere on the machine hits neither side alone."""
    rows = []
    for case in cases:
        name = case[0]
        row = {"case": name}
        with kernels(""):
            mine = make_step(case, minigen_lib(device))
        torch = torch_lib(device)
        theirs = make_step(case, torch) if torch is not None else None
        best_mine, best_theirs = float("inf"), float("inf")
        for _ in range(rounds):
            with kernels(""):
                best_mine = min(best_mine, median_time(mine, repeat, settle=settle))
            if theirs is not None:
                best_theirs = min(best_theirs, median_time(theirs, repeat, settle=settle))
        row["minigen_ms"] = 1e3 * best_mine
        if reference and device == "cpu":
            with kernels("reference"):
                row["reference_ms"] = 1e3 * median_time(make_step(case, minigen_lib(device)),
                                                        max(3, repeat // 3), warmup=1,
                                                        settle=settle)
        if theirs is not None:
            row["torch_ms"] = 1e3 * best_theirs
            row["ratio"] = row["minigen_ms"] / row["torch_ms"]
            if name in TARGETS:
                row["target"] = TARGETS[name]
        rows.append(row)
        log(format_row(row))
    return rows


COLUMNS = [("case", "{:<10}"), ("minigen_ms", "{:>11.2f}"), ("reference_ms", "{:>13.2f}"),
           ("torch_ms", "{:>9.2f}"), ("ratio", "{:>7.2f}x"), ("target", "{:>7.1f}x")]


def format_header() -> str:
    """The column titles of the kernel table, aligned with :func:`format_row`."""
    names = {"case": "case", "minigen_ms": "minigen ms", "reference_ms": "reference ms",
             "torch_ms": "torch ms", "ratio": "ratio", "target": "target"}
    widths = [len(fmt.format(0 if key != "case" else "")) for key, fmt in COLUMNS]
    return " ".join(f"{names[key]:>{w}}" if key != "case" else f"{names[key]:<{w}}"
                    for (key, _), w in zip(COLUMNS, widths))


def format_row(row: dict) -> str:
    """One row of the kernel table; a column the row lacks prints as ``-``."""
    cells = []
    for key, fmt in COLUMNS:
        width = len(fmt.format(0 if key != "case" else ""))
        cells.append(fmt.format(row[key]) if key in row else f"{'-':>{width}}")
    return " ".join(cells)


# --------------------------------------------------------------------------- the RBM case
def rbm_epochs(case=None, lr=0.01):
    """Three closures, each one CD-1 epoch over the same random binary data: minigen's
    ``ContrastiveDivergence.cd_step``, scikit-learn's ``BernoulliRBM.fit`` and the same update written in
    PyTorch (``bench_mirrors.rbm_cd1_epoch``); each of the last two None when not installed (neither is
    ever a dependency)."""
    from .models.energy.rbm import BernoulliRBM, ContrastiveDivergence

    _, n, n_visible, n_hidden, batch = case or RBM_CASE
    x = (np.random.default_rng(0).random((n, n_visible)) < 0.13).astype(np.float32)  # MNIST's ink density

    def mine():
        cd = ContrastiveDivergence(BernoulliRBM(n_visible, n_hidden), lr=lr)
        for start in range(0, n, batch):
            cd.cd_step(x[start:start + batch])

    try:
        from sklearn.neural_network import BernoulliRBM as SklearnRBM
    except ImportError:
        sklearn = None
    else:
        def sklearn():
            SklearnRBM(n_components=n_hidden, batch_size=batch, n_iter=1, learning_rate=lr,
                       random_state=0).fit(x)
    return mine, sklearn, _twin("rbm_cd1_epoch", x, n_hidden, batch, lr)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))


def _closures(name: str, case):
    """``{"minigen": fn, "torch": fn, ...}`` of the step or epoch case ``name`` (None where not installed)."""
    if name == "rbm":
        mine, sklearn, torch = rbm_epochs(case)
        return {"minigen": mine, "sklearn": sklearn, "torch": torch}
    make = _step_cases()[name][0]
    mine, theirs = make(case)
    return {"minigen": mine, "torch": theirs}


#: Small versions of the cases, run once before a memory probe so that library start-up (LLVM loading
#: Numba's cached kernels, oneDNN's primitives) is not counted as the step's memory.
WARMUP_CASES = {"vae": ("vae", 2), "pixelcnn": ("pixelcnn", 2), "dcgan": ("dcgan", 2, 4, 8),
                "unet": ("unet", 2, 8, (1, 2), (1,)), "mlp-20x16": ("mlp-20x16", 1), "rbm": ("rbm", 20, 784, 8, 10)}


def memory_probe(name: str, side: str, case) -> None:
    """In a fresh process: warm ``side`` up on a small case, build case ``name``'s models, then print
    (JSON) the peak resident memory that two calls of ``side``'s step add — activations, gradients,
    optimizer state, workspaces."""
    _closures(name, WARMUP_CASES[name])[side]()
    fn = _closures(name, tuple(case))[side]
    before = _status_mb("VmRSS")
    fn()
    fn()
    print(json.dumps({"peak_mb": max(0.0, _status_mb("VmHWM") - before)}))


def peak_memory_mb(name: str, side: str, case) -> float | None:
    """:func:`memory_probe` run in a fresh process (so that memory freed by earlier cases cannot hide this
    one's); None where ``/proc`` is missing or the probe fails."""
    if not os.path.exists("/proc/self/status"):
        return None
    code = "import json, sys; from minigen.bench import memory_probe; memory_probe(*json.loads(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps([name, side, list(case)])],
                          capture_output=True, text=True)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]
    except (IndexError, ValueError, KeyError):
        return None


def run_pair(name, mine, theirs, other: str, target: float, repeat=3, rounds=3, settle=1.0, log=print,
             probe=None) -> dict:
    """Best-of-rounds medians of two closures doing the same work, alternating so noise hits both:
    minigen's and another library's (``other`` names its column; ``theirs`` None when not installed);
    with ``probe=(case name, case)`` also the peak memory of a step of each (:func:`peak_memory_mb`)."""
    row = {"case": name}
    best_mine, best_theirs = float("inf"), float("inf")
    for _ in range(rounds):
        best_mine = min(best_mine, median_time(mine, repeat, warmup=1, settle=settle))
        if theirs is not None:
            best_theirs = min(best_theirs, median_time(theirs, repeat, warmup=1, settle=settle))
    row["minigen_ms"] = 1e3 * best_mine
    if theirs is not None:
        row.update({f"{other}_ms": 1e3 * best_theirs, "ratio": best_mine / best_theirs, "target": target})
    if probe is not None:
        row["minigen_peak_mb"] = peak_memory_mb(probe[0], "minigen", probe[1])
        row[f"{other}_peak_mb"] = peak_memory_mb(probe[0], other, probe[1]) if theirs is not None else None
    memory = "".join(f" {row[key]:>8.1f}" if row.get(key) is not None else f" {'-':>8}"
                     for key in ("minigen_peak_mb", f"{other}_peak_mb") if probe is not None)
    log(f"{row['case']:<10} {row['minigen_ms']:>11.2f} "
        + (f"{row[other + '_ms']:>11.2f} {row['ratio']:>7.2f}x {row['target']:>7.2f}x" if theirs else "-")
        + memory)
    return row


def run_rbm_case(repeat=3, rounds=3, settle=1.0, case=None, log=print, against="sklearn") -> dict:
    """One CD-1 epoch, minigen against scikit-learn (``against="sklearn"``) or PyTorch (``"torch"``)."""
    case = case or RBM_CASE
    mine, sklearn, torch = rbm_epochs(case)
    theirs, target = (sklearn, RBM_TARGET) if against == "sklearn" else (torch, 1.0)
    return run_pair(case[0] if against == "sklearn" else "rbm-torch", mine, theirs, against, target,
                    repeat, rounds, settle, log, probe=("rbm", case))


def dcgan_steps(case=None):
    """Two closures, each one iteration of Algorithm 1 (a D step, then a G step, Adam, batch 64 of
    28×28 images) with the same DCGAN players: minigen's, and the same layers in PyTorch (None when
    PyTorch is not installed)."""
    _, batch, width, latent = case or DCGAN_CASE
    import minigen as mg
    from .models.gans import GAN, AdversarialTraining
    from .models.gans.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init_
    from .optim import Adam

    real = np.random.default_rng(0).random((batch, 1, 28, 28)).astype(np.float32)
    mg.manual_seed(0)
    gan = GAN(dcgan_init_(DCGANGenerator(latent, width)), dcgan_init_(DCGANDiscriminator(width)), latent,
              tanh_images=True)
    game = AdversarialTraining(gan, Adam(gan.generator.parameters(), 2e-4, (0.5, 0.999)),
                               Adam(gan.discriminator.parameters(), 2e-4, (0.5, 0.999)))
    x = mg.tensor(real)

    def mine():
        game(x)

    try:
        import torch
        from torch import nn
    except ImportError:
        return mine, None
    G = nn.Sequential(nn.ConvTranspose2d(latent, 2 * width, 7, 1, 0, bias=False), nn.BatchNorm2d(2 * width),
                      nn.ReLU(), nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width),
                      nn.ReLU(), nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh())
    D = nn.Sequential(nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
                      nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2), nn.Conv2d(2 * width, 1, 7))
    og = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    xt = torch.tensor(2 * real - 1)
    softplus = torch.nn.functional.softplus

    def theirs():
        with torch.no_grad():
            fake = G(torch.randn(batch, latent, 1, 1))
        d_loss = softplus(-D(xt)).mean() + softplus(D(fake)).mean()
        od.zero_grad()
        d_loss.backward()
        od.step()
        D.requires_grad_(False)
        g_loss = softplus(-D(G(torch.randn(batch, latent, 1, 1)))).mean()
        og.zero_grad()
        g_loss.backward()
        og.step()
        D.requires_grad_(True)

    return mine, theirs


def run_dcgan_case(repeat=5, rounds=3, settle=1.0, log=print) -> dict:
    """One DCGAN training step, minigen against PyTorch (:func:`dcgan_steps`)."""
    mine, theirs = dcgan_steps(DCGAN_CASE)
    return run_pair(DCGAN_CASE[0], mine, theirs, "torch", DCGAN_TARGET, repeat, rounds, settle, log)


#: One DDPM training step (Algorithm 1 with Adam) of the reference U-Net: (name, batch, channels,
#: channel multipliers, attention levels); target minigen / PyTorch.
UNET_CASE = ("unet", 64, 32, (1, 2, 2), (2,))
UNET_TARGET = 2.0
#: The same step on the GPU at batch 128 (``--device cuda``), against PyTorch CUDA.
UNET_CUDA_CASE = ("unet-b128", 128, 32, (1, 2, 2), (2,))


def unet_steps(case=None, device="cpu", wait=True):
    """Two closures, each one step of Algorithm 1 (t and ε drawn, the loss, backward, Adam) on a batch of
    28×28 images with the same U-Net on ``device``: minigen's and its PyTorch twin (``bench_mirrors``; None
    without PyTorch). Both have the same parameter count (checked). On the GPU each closure waits for
    its device before it returns, unless ``wait=False`` (minigen's then returns once the step is
    launched: what the host's side of a step costs)."""
    _, batch, channels, mults, attention = case or UNET_CASE
    import minigen as mg
    from .models.diffusion import NoiseSchedule, ddpm_loss
    from .models.unet import UNet
    from .optim import Adam

    x0 = 2 * np.random.default_rng(0).random((batch, 1, 28, 28)).astype(np.float32) - 1
    schedule = NoiseSchedule.linear()
    mg.manual_seed(0)
    net = UNet(1, channels, mults, 2, attention, heads=4, groups=8).to(device)
    opt = Adam(net.parameters(), 2e-4)
    x, sync = mg.tensor(x0, device=device), minigen_lib(device)["sync"]

    def mine():
        loss = ddpm_loss(schedule, net, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if wait:
            sync()

    try:
        import torch

        from .bench_mirrors import UNet as TorchUNet
    except ImportError:
        return mine, None
    lib = torch_lib(device)
    dev = "cuda" if device == "cuda" else "cpu"
    twin = TorchUNet(1, channels, mults, 2, attention, heads=4, groups=8).to(dev)
    _same_size("unet", net, twin)
    topt = torch.optim.Adam(twin.parameters(), 2e-4)
    xt = torch.tensor(x0, device=dev)
    sqrt_ab = torch.tensor(np.sqrt(schedule.alpha_bars), dtype=torch.float32, device=dev)
    sqrt_1mab = torch.tensor(np.sqrt(1 - schedule.alpha_bars), dtype=torch.float32, device=dev)

    def theirs():
        t = torch.randint(1, schedule.T + 1, (batch,), device=dev)
        noise = torch.randn_like(xt)
        noisy = sqrt_ab[t - 1, None, None, None] * xt + sqrt_1mab[t - 1, None, None, None] * noise
        loss = ((noise - twin(noisy, t)) ** 2).mean()
        topt.zero_grad()
        loss.backward()
        topt.step()
        lib["sync"]()

    return mine, theirs


def run_unet_case(repeat=3, rounds=3, settle=1.0, log=print, device="cpu") -> dict:
    """One DDPM training step of the U-Net, minigen against its PyTorch twin (:func:`unet_steps`): at batch
    64 on the CPU, at batch 128 on the GPU (with the GPU memory each library's allocator holds)."""
    case = UNET_CUDA_CASE if device == "cuda" else UNET_CASE
    mine, theirs = unet_steps(case, device)
    row = run_pair(case[0], mine, theirs, "torch", UNET_TARGET, repeat, rounds, settle, log)
    if device == "cuda":
        row["minigen_gpu_mb"] = backend.cupy.get_default_memory_pool().total_bytes() / 2 ** 20
        if theirs is not None:
            import torch
            row["torch_gpu_mb"] = torch.cuda.max_memory_reserved() / 2 ** 20
        log(f"  GPU memory held: minigen (CuPy pool) {row['minigen_gpu_mb']:.0f} MB, "
            f"PyTorch (reserved) {row.get('torch_gpu_mb', float('nan')):.0f} MB")
    return row


#: One training step (loss, backward, Adam) of more families' reference models at MNIST scale, against the
#: same networks in PyTorch (``bench_mirrors``): (name, batch). And the engine's dispatch cost: forward +
#: backward through a 20-layer MLP of width 16 at batch 1, where the arithmetic is negligible.
VAE_CASE = ("vae", 100)
PIXELCNN_CASE = ("pixelcnn", 16)
OVERHEAD_CASE = ("mlp-20x16", 1)
STEP_TARGET = 2.5
OVERHEAD_TARGET = 3.0


def _twin(name: str, *args, **kwargs):
    """The PyTorch twin ``bench_mirrors.<name>(*args, **kwargs)``, or None without PyTorch."""
    try:
        from . import bench_mirrors
    except ImportError:
        return None
    return getattr(bench_mirrors, name)(*args, **kwargs)


def _same_size(case: str, mine, twin) -> None:
    """Twins must have minigen's parameter count, or the comparison would time different models."""
    ours, theirs = sum(p.data.size for p in mine.parameters()), sum(p.numel() for p in twin.parameters())
    if ours != theirs:
        raise RuntimeError(f"bench {case}: the PyTorch twin has {theirs} parameters, minigen's model {ours}")


def _adam_steps(case, model, loss, twin, twin_loss, lr=1e-3):
    """Closures of one training step each — ``loss()``, backward, Adam — for minigen's ``model`` and its
    PyTorch ``twin`` (None without PyTorch)."""
    from .optim import Adam
    opt = Adam(model.parameters(), lr)

    def mine():
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    if twin is None:
        return mine, None
    import torch
    _same_size(case, model, twin)
    topt = torch.optim.Adam(twin.parameters(), lr)

    def theirs():
        value = twin_loss()
        topt.zero_grad()
        value.backward()
        topt.step()
    return mine, theirs


def _binary_images(batch: int) -> np.ndarray:
    return (np.random.default_rng(0).random((batch, 1, 28, 28)) < 0.13).astype(np.float32)  # MNIST's ink


def vae_steps(case=None):
    """One ELBO step of Burda et al.'s MLP VAE (784-200-200-50, tanh, Bernoulli) on a batch of binary
    28×28 images, minigen and PyTorch."""
    import minigen as mg
    from .models.vae import VAE, MLPDecoder, MLPEncoder
    name, batch = case or VAE_CASE
    x0 = _binary_images(batch)
    mg.manual_seed(0)
    model = VAE(MLPEncoder((1, 28, 28), 50), MLPDecoder((1, 28, 28), 50), 50)
    x, twin = mg.tensor(x0), _twin("VAE")
    xt = None if twin is None else __import__("torch").tensor(x0)
    return _adam_steps(name, model, lambda: model.loss((x,))[0], twin, lambda: twin.loss(xt))


def pixelcnn_steps(case=None):
    """One maximum-likelihood step of the 64-channel, 7-block PixelCNN on a batch of binary 28×28 images
    (the binarized-MNIST runs' model), minigen and PyTorch (a masked-kernel PixelCNN as usually written)."""
    import minigen as mg
    from .models.pixelcnn import PixelCNN
    name, batch = case or PIXELCNN_CASE
    x0 = _binary_images(batch)
    mg.manual_seed(0)
    model = PixelCNN((1, 28, 28), channels=64, blocks=7)
    x, twin = mg.tensor(x0), _twin("PixelCNN", 64, 7)
    xt = None if twin is None else __import__("torch").tensor(x0)
    return _adam_steps(name, model, lambda: model.loss((x,))[0], twin, lambda: twin.loss(xt))


def overhead_steps(case=None):
    """Forward + backward through 20 × (Linear(16, 16), Tanh) at batch 1: the engine's per-op cost."""
    import minigen as mg
    from . import nn
    name, batch = case or OVERHEAD_CASE
    x0 = np.random.default_rng(0).standard_normal((batch, 16)).astype(np.float32)
    mg.manual_seed(0)
    model = nn.Sequential(*[layer for _ in range(20) for layer in (nn.Linear(16, 16), nn.Tanh())])
    x = mg.tensor(x0)

    def mine():
        model.zero_grad()
        model(x).sum().backward()
    twin = _twin("mlp", [16] * 21, last=True)
    if twin is None:
        return mine, None
    import torch
    _same_size(name, model, twin)
    xt = torch.tensor(x0)

    def theirs():
        twin.zero_grad()
        twin(xt).sum().backward()
    return mine, theirs


#: The fused diffusion steps (Eq. DIF-4, DIF-14) on whole batches: (name, kernel, batch shape).
#: Targets: the fused reverse step >= 3x faster than the line-by-line NumPy update, and no slower
#: than the same update in PyTorch (noise drawn beforehand in all three).
DIFFUSION_CASES = [
    ("p_sample-28", "p", (64, 1, 28, 28)),
    ("p_sample-32", "p", (64, 3, 32, 32)),
    ("q_sample-28", "q", (64, 1, 28, 28)),
    ("q_sample-32", "q", (64, 3, 32, 32)),
]
DIFFUSION_TARGET_NUMPY = 3.0
DIFFUSION_TARGET_TORCH = 1.0


def diffusion_updates(kind: str, shape: tuple, device: str = "cpu") -> dict:
    """Closures doing one update on float32 arrays of ``shape`` on ``device``: the fused kernel as the engine
    calls it, the line-by-line formula in NumPy (CuPy on the GPU), and the same formula in PyTorch (when
    installed)."""
    xp = backend.xp_for(device)
    rng = np.random.default_rng(0)
    x, eps, z = (xp.asarray(rng.standard_normal(shape).astype(np.float32)) for _ in range(3))
    n = shape[0]
    a, b = rng.random(n), rng.random(n)                   # per-example √ᾱ_t, √(1 − ᾱ_t)
    c1, c2, sigma = 1.0001, 0.02, 0.1                      # 1/√α_t, (1 − α_t)/√(1 − ᾱ_t), σ_t
    col = (-1,) + (1,) * (len(shape) - 1)
    a32, b32 = (xp.asarray(v.astype(np.float32).reshape(col)) for v in (a, b))
    if kind == "p":
        fused = backend.get_kernel("diffusion_p_sample", device)
        x_fused = x.copy()                  # as the sampler does: x_{t-1} overwrites x_t (drifts by ~2x here)
        closures = {"fused": lambda: fused(x_fused, eps, z, c1, c2, sigma, out=x_fused),
                    "numpy": lambda: (x - c2 * eps) * c1 + sigma * z}
    else:
        fused = backend.get_kernel("diffusion_q_sample", device)
        a_flat, b_flat = a32.reshape(-1), b32.reshape(-1)  # as the engine passes them: x's dtype and device
        closures = {"fused": lambda: fused(x, z, a_flat, b_flat), "numpy": lambda: a32 * x + b32 * z}
    try:
        import torch
    except ImportError:
        return closures
    tx, te, tz, ta, tb = (torch.as_tensor(v, device="cuda" if device == "cuda" else "cpu")
                          for v in (x, eps, z, a32, b32))
    if kind == "p":
        closures["torch"] = lambda: (tx - c2 * te) * c1 + sigma * tz
    else:
        closures["torch"] = lambda: ta * tx + tb * tz
    return closures


def run_diffusion_case(case, repeat=10, rounds=3, settle=0.5, inner=200, log=print, device="cpu") -> dict:
    """Microseconds per update (best of rounds of medians of ``inner``-call loops) for each closure; on the
    GPU each loop waits for the device at its end."""
    name, kind, shape = case
    closures = diffusion_updates(kind, shape, device)
    sync = minigen_lib(device)["sync"]
    best = {key: float("inf") for key in closures}
    for _ in range(rounds):
        for key, fn in closures.items():
            def loop(fn=fn):
                for _ in range(inner):
                    fn()
                sync()                      # one stream (CuPy's and PyTorch's default): waits for both
            best[key] = min(best[key], median_time(loop, repeat, warmup=1, settle=settle) / inner)
    row = {"case": name, "shape": list(shape), **{f"{k}_us": 1e6 * v for k, v in best.items()},
           "speedup_vs_numpy": best["numpy"] / best["fused"]}
    if "torch" in best:
        row["ratio"] = best["fused"] / best["torch"]
    if kind == "p":
        row["target_speedup_vs_numpy"] = DIFFUSION_TARGET_NUMPY
        if "torch" in best:
            row["target"] = DIFFUSION_TARGET_TORCH
    torch_us = f"{row['torch_us']:>9.1f} {row['ratio']:>7.2f}x" if "torch_us" in row else f"{'-':>9} {'-':>8}"
    log(f"{name:<12} {row['fused_us']:>9.1f} {row['numpy_us']:>9.1f} {row['speedup_vs_numpy']:>7.1f}x "
        f"{torch_us}")
    return row


def run_sampling_case(case, log=print) -> dict:
    """Draw the same images with the naive loop (one full forward pass per pixel) and the row-window
    sampler, from the same seed: wall times, the speed-up, and whether the images are identical."""
    from . import random as mg_random
    from .models import pixelcnn
    name, model_name, kwargs, shape, n = case
    mg_random.manual_seed(0)
    model = getattr(pixelcnn, model_name)(shape, **kwargs)
    times, images = {}, {}
    for mode in ("naive", "incremental"):
        mg_random.manual_seed(1)
        start = time.perf_counter()
        images[mode] = model.sample(n, incremental=mode == "incremental")
        times[mode] = time.perf_counter() - start
    row = {"case": name, "naive_s": times["naive"], "incremental_s": times["incremental"],
           "speedup": times["naive"] / times["incremental"], "target_speedup": SAMPLING_TARGET,
           "identical": bool(np.array_equal(images["naive"], images["incremental"])), "samples": n}
    log(f"{name:<12} {row['naive_s']:>9.1f} {row['incremental_s']:>9.1f} {row['speedup']:>7.1f}x "
        f"{SAMPLING_TARGET:>6.1f}x  {'yes' if row['identical'] else 'NO'}")
    return row


def _step_cases() -> dict:
    """The training-step cases of ``--suite steps``: name -> (closures, case, target, other library)."""
    return {"vae": (vae_steps, VAE_CASE, STEP_TARGET), "pixelcnn": (pixelcnn_steps, PIXELCNN_CASE, STEP_TARGET),
            "dcgan": (dcgan_steps, DCGAN_CASE, DCGAN_TARGET), "unet": (unet_steps, UNET_CASE, UNET_TARGET),
            "mlp-20x16": (overhead_steps, OVERHEAD_CASE, OVERHEAD_TARGET)}


STEP_HEADER = (f"{'case':<10} {'minigen ms':>11} {'torch ms':>11} {'ratio':>8} {'target':>8} {'mg MB':>8} "
               f"{'torch MB':>8}")


def run_step_cases(names, repeat=3, rounds=3, log=print) -> list:
    """One training step of each named case (see :func:`_step_cases`), minigen against PyTorch."""
    cases, rows = _step_cases(), []
    for name in names:
        make, case, target = cases[name]
        mine, theirs = make(case)
        reps = repeat if name != "mlp-20x16" else 50 * repeat
        rows.append(run_pair(case[0], mine, theirs, "torch", target, reps, rounds, log=log, probe=(name, case)))
    return rows


def run_profile(name: str, device: str = "cpu", steps: int = 3, sync: bool = False, log=print):
    """``minigen bench --profile CASE``: one training step of a step case (:func:`_step_cases`), op by op
    (:class:`minigen.autograd.profile`), averaged over ``steps`` steps after two warm-up steps. On the GPU
    (the U-Net only) the times are what launching costs the host, or with ``sync`` what the kernels take
    (the device is waited for around each op); returns the profile."""
    from .autograd import profile
    make, case, _ = _step_cases()[name]
    if device == "cuda":
        if name != "unet":
            raise ValueError(f"bench --profile {name} --device cuda: on the GPU only the unet case is built")
        mine, _ = make(UNET_CUDA_CASE, device)
    else:
        mine, _ = make(case)
    mine()
    mine()                                   # compiled, cached, buffers allocated
    with profile(sync=sync) as prof:
        for _ in range(steps):
            mine()
    timing = ", kernel time (synchronised)" if sync else ""
    log(f"\n{name}: one training step, op by op (mean of {steps} steps after 2 warm-up steps, {device}{timing})")
    log(prof.table(per=steps))
    return prof


def write_chart(rows, path: str) -> str:
    """A bar chart of minigen / other library per case (log scale), with each case's target marked."""
    from matplotlib.figure import Figure
    from .viz import save_figure
    rows = [r for r in rows if "ratio" in r]
    fig = Figure(figsize=(8, 0.35 * len(rows) + 1.2), layout="constrained")
    ax = fig.subplots()
    names = [r["case"] for r in rows]
    ratios = [r["ratio"] for r in rows]
    colours = ["tab:grey" if "target" not in r else "tab:green" if r["ratio"] <= r["target"] else "tab:red"
               for r in rows]
    ax.barh(names, ratios, color=colours)
    for i, r in enumerate(rows):
        if "target" in r:
            ax.plot([r["target"]] * 2, [i - 0.4, i + 0.4], color="black", lw=1.5)
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter
    ax.xaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2, 3, 5]))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g×"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_yaxis()
    ax.set(xlabel="time of minigen / time of PyTorch (scikit-learn for 'rbm'); black ticks: targets",
           title="minigen bench --suite all (green: target met, red: missed, grey: no target)")
    return save_figure(fig, path)


def run_bench(args) -> int:
    """``minigen bench``: run the suite ``args.suite``, print the tables and whether the targets are met,
    and write ``--json`` when asked; ``--suite all`` also writes ``bench.json`` and the chart ``bench.png``
    into ``--out``. Returns 0. On ``--device cuda``: the kernels, the fused diffusion steps and the U-Net's
    training step at batch 128 against PyTorch CUDA; the RBM, sampling and the other training steps run on the
    CPU only."""
    suites = {"conv": CONV_CASES, "attention": ATTENTION_CASES,
              "kernels": CONV_CASES + ATTENTION_CASES}
    info = header(args.device)
    print("minigen bench — forward + backward, float32, best of "
          f"{args.rounds} rounds of {args.repeat}-run medians")
    for key, value in info.items():
        print(f"  {key}: {value}")
    rows = []
    cpu = args.device == "cpu"
    if args.profile:
        run_profile(args.profile, args.device, max(1, args.repeat), sync=args.sync)
        return 0
    if args.suite == "sampling":
        print(f"\nsequential sampling (Eq. AR-4) at 28x28: naive loop vs row-window sampler, same seed")
        print(f"{'case':<12} {'naive s':>9} {'window s':>9} {'speedup':>8} {'target':>7}  identical")
        rows += [run_sampling_case(case) for case in SAMPLING_CASES]
        missed = [r["case"] for r in rows if r["speedup"] < r["target_speedup"] or not r["identical"]]
        print("targets met" if not missed else f"targets missed: {', '.join(missed)}")
    if args.suite in ("kernels", "conv", "attention", "all"):
        print(format_header())
        rows += run_cases(suites[args.suite if args.suite != "all" else "kernels"], args.repeat, args.device,
                          not args.no_reference, args.rounds)
    if args.suite in ("diffusion", "all"):
        lines = "NumPy" if cpu else "CuPy"
        print(f"\nfused diffusion steps, float32, microseconds per update (noise drawn beforehand); targets: "
              f"reverse step >= {DIFFUSION_TARGET_NUMPY:g}x faster than {lines} line by line, "
              f"<= {DIFFUSION_TARGET_TORCH:g}x PyTorch")
        print(f"{'case':<12} {'fused us':>9} {lines.lower() + ' us':>9} {'speedup':>8} {'torch us':>9} {'ratio':>8}")
        rows += [run_diffusion_case(case, args.repeat, args.rounds, device=args.device) for case in DIFFUSION_CASES]
        missed = [r["case"] for r in rows if r.get("speedup_vs_numpy", 99) < r.get("target_speedup_vs_numpy", 0)]
        if missed:
            print(f"NumPy speed-up targets missed: {', '.join(missed)}")
    steps = {"dcgan": ["dcgan"], "diffusion": ["unet"], "steps": list(_step_cases()),
             "all": list(_step_cases())}.get(args.suite, [])
    if steps and cpu:
        print(f"\none training step (loss, backward, Adam) against the same network in PyTorch, same thread "
              f"count; mlp-20x16: forward + backward only; MB: peak memory two steps add to the built model (fresh process, warmed up)")
        print(STEP_HEADER)
        rows += run_step_cases(steps, max(1, args.repeat // 3), args.rounds)
    if args.suite in ("diffusion", "steps", "all") and not cpu:
        print(f"\none DDPM training step of the U-Net at batch {UNET_CUDA_CASE[1]} (Algorithm 1, Adam) against the same "
              f"network in PyTorch CUDA")
        print(STEP_HEADER)
        rows.append(run_unet_case(max(1, args.repeat // 2), args.rounds, device=args.device))
    if args.suite in ("rbm", "all") and cpu:
        print("\none CD-1 epoch, 10000x784 binary float32 data, 500 hidden units, batch 100, "
              "against scikit-learn's BernoulliRBM and the same update in PyTorch")
        print(f"{'case':<10} {'minigen ms':>11} {'other ms':>11} {'ratio':>8} {'target':>8} {'mg MB':>8} {'other MB':>8}")
        rows.append(run_rbm_case(max(1, args.repeat // 3), args.rounds))
        rows.append(run_rbm_case(max(1, args.repeat // 3), args.rounds, against="torch"))
    if not cpu and backend.cuda_available():
        from collections import Counter

        from .kernels.gpu import conv as gpu_conv
        if gpu_conv._chosen:
            info["conv_algorithms"] = dict(Counter(f"{key[0]} {name}" for key, name in gpu_conv._chosen.items()))
            print(f"GPU convolution algorithms that 'auto' timed fastest, per product (shapes): "
                  f"{info['conv_algorithms']}")
    missed = [r["case"] for r in rows if "target" in r and "ratio" in r and r["ratio"] > r["target"]]
    if any("ratio" in r for r in rows):
        print("targets met" if not missed else f"targets missed: {', '.join(missed)}")
    report = {"header": info, "rows": rows}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    if args.suite == "all":
        from .train import write_json
        os.makedirs(args.out, exist_ok=True)
        write_json(os.path.join(args.out, "bench.json"), report)
        print(f"wrote {os.path.join(args.out, 'bench.json')} and {write_chart(rows, os.path.join(args.out, 'bench.png'))}")
    return 0
