"""The ``minigen`` command line."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minigen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="time the kernels against the NumPy reference "
                                          "(and PyTorch when installed)")
    bench.add_argument("--suite", default="kernels", choices=["kernels", "conv", "attention"],
                       help="which benchmarks to run (default: kernels = conv + attention)")
    bench.add_argument("--repeat", type=int, default=10, help="timed runs per block (median)")
    bench.add_argument("--rounds", type=int, default=3,
                       help="alternating minigen/PyTorch blocks per case (best block kept)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("--no-reference", action="store_true",
                       help="skip the (slow) NumPy reference timings")
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from .bench import run_bench

        return run_bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
