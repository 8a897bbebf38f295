"""Where the U-Net step's time goes on a GPU: host (Python + launches) or device (kernels), and the
convolution kernels alone, each algorithm of ``kernels/gpu/conv.py``, against cuDNN
(docs/gpu/unet-step-h200-4.log).

Usage (on a machine with CuPy, a GPU and PyTorch): python tools/gpu_diag.py
"""
import cProfile
import pstats
import sys
import time

import numpy as np


def timed(fn, n=10, warm=2):
    """Mean milliseconds of fn() over n calls after warm ones."""
    for _ in range(warm):
        fn()
    s = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - s) / n * 1e3


def main():
    from collections import Counter

    import cupy
    import minigen.kernels.gpu.conv as conv
    from minigen.bench import UNET_CUDA_CASE, unet_steps

    mine, theirs = unet_steps(UNET_CUDA_CASE, "cuda")
    for algorithm in ("columns", "auto"):
        conv.ALGORITHM = algorithm
        print(f"A. step (synced), convolutions {algorithm!r}: minigen {timed(mine):.1f} ms", flush=True)
    print(f"   torch default {timed(theirs):.1f} ms; 'auto' chose, per product:",
          dict(Counter(f"{key[0]} {name}" for key, name in conv._chosen.items())), flush=True)
    import torch
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"   torch strict fp32 (no TF32): {timed(theirs):.1f} ms", flush=True)
    torch.backends.cudnn.allow_tf32 = True

    # B. host time of a step without waiting vs total
    step, _ = unet_steps(UNET_CUDA_CASE, "cuda", wait=False)
    for _ in range(3):
        step()
    cupy.cuda.Device().synchronize()
    hs, ws = [], []
    for _ in range(5):
        s = time.perf_counter()
        step()
        h = time.perf_counter()
        cupy.cuda.Device().synchronize()
        e = time.perf_counter()
        hs.append((h - s) * 1e3)
        ws.append((e - s) * 1e3)
    print(f"B. host time to enqueue one step {np.median(hs):.1f} ms; wall incl. wait {np.median(ws):.1f} ms",
          flush=True)
    # GPU time of a step, from events
    ev0, ev1 = cupy.cuda.Event(), cupy.cuda.Event()
    ev0.record()
    for _ in range(5):
        step()
    ev1.record()
    ev1.synchronize()
    print(f"   events: {cupy.cuda.get_elapsed_time(ev0, ev1) / 5:.1f} ms per step", flush=True)

    # C. cProfile of the host side
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(5):
        step()
    cupy.cuda.Device().synchronize()
    pr.disable()
    st = pstats.Stats(pr, stream=sys.stdout)
    print("C. cProfile, 5 steps, by tottime")
    st.sort_stats("tottime").print_stats(30)



    # D. the convolution kernels alone at the U-Net's 3x3 shapes: host and GPU time per call, each
    # algorithm, vs cuDNN
    import cupyx.profiler
    print("D. conv kernels, batch 128, 3x3 pad 1: host us / GPU us per call (torch: cuDNN)")
    for shape, c_out in [((128, 32, 28, 28), 32), ((128, 64, 14, 14), 64), ((128, 64, 7, 7), 64),
                         ((128, 128, 7, 7), 64)]:
        xa = cupy.random.standard_normal(shape, dtype=cupy.float32)
        wa = cupy.random.standard_normal((c_out, shape[1], 3, 3), dtype=cupy.float32)
        ga = cupy.random.standard_normal((shape[0], c_out) + shape[2:], dtype=cupy.float32)
        tx, tw, tg = (torch.as_tensor(a, device="cuda") for a in (xa, wa, ga))
        cases = [("torch", "fwd", lambda: torch.nn.functional.conv2d(tx, tw, padding=1)),
                 ("torch", "dx", lambda: torch.nn.grad.conv2d_input(shape, tw, tg, padding=1)),
                 ("torch", "dw", lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, padding=1))]
        for algorithm in conv.ALGORITHMS:
            cases += [(algorithm, "fwd", lambda: conv.conv2d_forward(xa, wa, 1, 1)),
                      (algorithm, "dx", lambda: conv.conv2d_input_grad(ga, wa, shape, 1, 1)),
                      (algorithm, "dw", lambda: conv.conv2d_weight_grad(xa, ga, wa.shape, 1, 1))]
        print(f"  {shape}->{c_out}:", flush=True)
        for algorithm, product, fn in cases:
            if algorithm != "torch":
                conv.ALGORITHM = algorithm
            r = cupyx.profiler.benchmark(fn, n_repeat=20, n_warmup=3)
            print(f"    {algorithm + ' ' + product:16s} {np.median(r.cpu_times) * 1e6:6.0f} / "
                  f"{np.median(r.gpu_times[0]) * 1e6:6.0f}", flush=True)
        conv.ALGORITHM = "auto"


if __name__ == "__main__":
    main()
