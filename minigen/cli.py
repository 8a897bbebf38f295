"""The ``minigen`` command line: demo, train, sample, eval, bench, list, lecture, equations, assignments.

Every subcommand has a complete ``--help``. Mistakes (a bad option, a missing
data file, an existing run) end with one line on stderr and exit status 2,
not a traceback; set ``MINIGEN_DEBUG=1`` to see the traceback anyway.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

EXAMPLES = """examples:
  minigen demo                                   # small models of every family on the digits, a gallery
  minigen train vae --data mnist --data-dir ../shared/data/mnist --binarize dynamic --epochs 100
  minigen eval runs/vae --k 5000                 # test NLL by the IWAE bound, linear probe
  minigen sample runs/vae -n 64
  minigen list
"""


#: The walk-throughs of ``lectures/``, in slide order (``minigen lecture SECTION``).
LECTURE_SECTIONS = ["taxonomy", "autoregressive", "vae", "flows", "gans", "energy", "diffusion"]


def _positive(kind):
    """An argparse type: ``kind`` (int or float) that must be > 0, with a one-line message otherwise."""
    noun = "integer" if kind is int else "number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {value}")
        return value
    parse.__name__ = f"positive {noun}"
    return parse


_positive_int, _positive_float = _positive(int), _positive(float)


def _duration(text):
    from .train import parse_duration
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_data_arguments(parser, default_data="digits") -> None:
    """Add the ``data`` option group (``--data``, ``--data-dir``, ``--no-download``, ``--binarize``)."""
    from .data import list_datasets
    names = list(list_datasets())
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=default_data, choices=names,
                       help=f"dataset (default: {default_data}; see `minigen list`)")
    group.add_argument("--data-dir", metavar="DIR",
                       help="folder holding the dataset files (never downloads); default: $MINIGEN_DATA "
                            "or ~/.cache/minigen, downloading missing files")
    group.add_argument("--no-download", action="store_true", help="fail instead of downloading missing files")
    group.add_argument("--binarize", choices=["none", "dynamic", "threshold"], default="none",
                       help="grey levels as they are, resampled Bernoulli(x) per batch (dynamic), or x > 0.5 "
                            "(default: none; binarized-mnist is always the fixed Larochelle-Murray binarization)")


def add_train_parser(sub) -> None:
    """Add ``minigen train MODEL``: one subcommand per registered model, with data, training,
    run-folder and model options."""
    from .models import registry
    train = sub.add_parser("train", help="train a model; writes runs/<name>/", epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Train a model. A run folder holds config.json, metrics.jsonl, "
                                       "checkpoint.npz, sample grids and loss.png; --resume continues it.")
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    for spec in registry().values():
        p = models.add_parser(spec.name, help=spec.summary, description=spec.summary)
        add_data_arguments(p, spec.default_data)
        run = p.add_argument_group("training")
        length = run.add_mutually_exclusive_group()
        length.add_argument("--epochs", type=_positive_int, default=10, help="passes over the data (default: 10)")
        length.add_argument("--steps", type=_positive_int, help="optimizer steps (overrides --epochs)")
        run.add_argument("--batch-size", type=_positive_int, default=spec.defaults.get("batch_size", 100),
                         help="examples per step (default: %(default)s)")
        run.add_argument("--lr", type=_positive_float, default=spec.defaults.get("lr", 1e-3),
                         help="learning rate: Adam's, or SGD's for models trained by contrastive divergence "
                              "(default: %(default)s)")
        run.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                         help="learning-rate schedule over the run (default: constant)")
        run.add_argument("--min-lr-ratio", type=float, default=0.0,
                         help="cosine schedule ends at lr * this (default: 0)")
        run.add_argument("--clip-grad-norm", type=_positive_float, help="clip the global gradient norm")
        run.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                         help="keep an exponential moving average of the weights (e.g. 0.999); samples and "
                              "evaluations then use it (default: 0 = off)")
        run.add_argument("--seed", type=int, default=0, help="random seed: same seed, same run (default: 0)")
        _add_device_argument(run)
        run.add_argument("--time-limit", type=_duration, metavar="T",
                         help="stop after this much training time, e.g. 3600, 60m, 1h (checkpointed)")
        run.add_argument("--detect-anomaly", action="store_true",
                         help="check every op for NaN/inf (slow): a run that diverges stops naming the "
                              "operation and the line of code that first produced it")
        out = p.add_argument_group("run folder")
        out.add_argument("--name", help="run name (default: the model name)")
        out.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
        out.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
        out.add_argument("--checkpoint-every", type=_positive_int, default=1000, help="steps (default: 1000)")
        out.add_argument("--log-every", type=_positive_int, default=50, help="steps per metrics row (default: 50)")
        out.add_argument("--sample-every", type=_positive_int, help="steps between sample grids (default: end only)")
        out.add_argument("--eval-every", type=_positive_int, help="steps between test-subset evaluations")
        out.add_argument("--eval-k", type=_positive_int, default=100,
                         help="importance samples of those evaluations (default: 100)")
        out.add_argument("--eval-examples", type=_positive_int, default=1000,
                         help="size of the fixed random test subset those evaluations use (default: 1000)")
        out.add_argument("--no-progress", action="store_true", help="no progress bar")
        spec.add_arguments(p.add_argument_group(f"{spec.name} model"))


def build_parser() -> argparse.ArgumentParser:
    """The ``minigen`` argument parser, with every subcommand."""
    parser = argparse.ArgumentParser(prog="minigen", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train a small model of each family on the digits and "
                                       "write runs/demo/index.html (a few minutes on 2 cores)")
    demo.add_argument("--runs-dir", default="runs", help="where runs/demo goes (default: runs)")
    demo.add_argument("--steps", type=_positive_int, help="steps per model (default: each family's demo length)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    add_train_parser(sub)

    smp = sub.add_parser("sample", help="draw samples from a trained run into a PNG grid")
    smp.add_argument("run", help="run folder, e.g. runs/vae")
    smp.add_argument("-n", type=_positive_int, default=64, help="number of samples (default: 64)")
    smp.add_argument("--out", help="PNG path (default: RUN/samples_n<N>_seed<S>.png)")
    smp.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_device_argument(smp)
    _add_sampler_arguments(smp).add_argument(
        "--caption", help="latent_diffusion: condition every sample on this caption, e.g. 'a thin seven'")

    ev = sub.add_parser("eval", help="score a trained run on its test set; prints and writes metrics JSON")
    ev.add_argument("run", help="run folder, e.g. runs/vae — or an experiment: hopfield, bm, planar, gan-modes, kill-resume")
    ev.add_argument("--limit", type=_positive_int, help="score a seeded random subset of N test examples (faster; test files may be sorted by class)")
    ev.add_argument("--seed", type=int, default=0, help="random seed of the estimate (default: 0)")
    _add_device_argument(ev)
    ev.add_argument("--output", help="file name inside the run folder (default: eval.json)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    samplers = _add_sampler_arguments(ev)
    samplers.add_argument(
        "--bound", action="store_true", help="ddpm: also the variational bound (Eq. DIF-7) in bits/dim — T network "
                                             "passes per test batch: combine with --limit on a CPU")
    samplers.add_argument("--bound-terms", choices=["all", "sampled"], default="all",
                          help="ddpm --bound: sum all T terms, or one random term per image times T (unbiased, "
                               "one pass per image: the whole test set) (default: all)")
    from .models.experiments import add_experiment_arguments
    add_experiment_arguments(ev.add_argument_group("experiments (hopfield, bm, planar, gan-modes, kill-resume)"))
    from .models import registry
    added = set()
    for spec in registry().values():      # one group of options per family (vae and hvae share theirs)
        if spec.add_eval_arguments is not None and spec.add_eval_arguments not in added:
            added.add(spec.add_eval_arguments)
            title = getattr(spec.add_eval_arguments, "group_title", f"{spec.name} runs")
            spec.add_eval_arguments(ev.add_argument_group(title))

    bench = sub.add_parser("bench", help="time the kernels against the NumPy reference "
                                         "(and PyTorch when installed)")
    bench.add_argument("--suite", default="all",
                       choices=["all", "kernels", "conv", "attention", "rbm", "dcgan", "steps", "sampling",
                                "diffusion"],
                       help="which benchmarks to run (default: all = kernels (conv + attention) + the fused "
                            "diffusion steps + one training step of each family's reference model (steps) + the "
                            "RBM epoch, with a JSON report and a chart in --out; sampling = PixelCNN's naive vs "
                            "row-window sampler, a few minutes)")
    bench.add_argument("--repeat", type=int, default=10, help="timed runs per block (median)")
    bench.add_argument("--rounds", type=int, default=3,
                       help="alternating minigen/PyTorch blocks per case (best block kept)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                       help="where to run minigen and PyTorch (default: cpu)")
    bench.add_argument("--profile", metavar="CASE", choices=["vae", "pixelcnn", "dcgan", "unet", "mlp-20x16"],
                       help="instead of timing against PyTorch: one training step of CASE op by op (where the time "
                            "goes: calls, forward and backward ms, MB allocated), mean of --repeat steps")
    bench.add_argument("--sync", action="store_true",
                       help="with --profile on cuda: wait for the GPU around each op (kernel time, not launch time)")
    bench.add_argument("--no-reference", action="store_true",
                       help="skip the (slow) NumPy reference timings")
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    bench.add_argument("--out", default="bench-results", metavar="DIR",
                       help="--suite all: folder for bench.json and the chart bench.png (default: bench-results)")

    sub.add_parser("list", help="the models `minigen train` knows and the datasets")
    lec = sub.add_parser("lecture", help="run one walk-through of lectures/ (the lecture companion), "
                                         "writing its figures")
    lec.add_argument("section", choices=LECTURE_SECTIONS, help="the lecture section, in slide order")
    lec.add_argument("--fast", action="store_true", help="small sizes and few steps (what the tests run)")
    lec.add_argument("--out", metavar="DIR", help="folder for figures and runs (default: lecture-out/SECTION)")
    asg = sub.add_parser("assignments", help="assignment starter code: list the tasks, or build a student copy "
                                             "whose task regions raise NotImplementedError")
    asg.add_argument("action", choices=["list", "build"], help="list the tasks, or build OUT")
    asg.add_argument("out", nargs="?", help="build: the folder to write (must not exist)")
    asg.add_argument("--solutions", action="store_true", help="build: keep the solutions (the instructor's copy)")
    eqs = sub.add_parser("equations", help="write lectures/equations.md: each equation of the lecture, the code "
                                           "that computes it, the tests that prove it (from a source checkout)")
    eqs.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 if an equation lacks code or a test, or the index is stale")
    return parser


def option_arguments(options: dict) -> list:
    """Keyword options as command-line arguments: ``batch_size=64`` → ``--batch-size 64``; ``True`` → a flag."""
    argv = []
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return argv


def train_config(args, argv=None) -> dict:
    """The run configuration of parsed ``minigen train`` arguments (``argv``: the command line they came
    from, default ``sys.argv``), as ``runs.train`` takes it."""
    cfg = {k: v for k, v in vars(args).items() if k != "command"}
    cfg["name"] = args.name or args.model
    cfg["command"] = " ".join(["minigen"] + (sys.argv[1:] if argv is None else list(argv)))
    if args.data_dir is not None:
        cfg["data_dir"] = os.path.abspath(args.data_dir)
    return cfg


def run_command(args) -> int:
    """Run the subcommand of parsed ``args``; returns the exit status."""
    if args.command == "bench":
        from .bench import run_bench
        return run_bench(args)
    if args.command == "lecture":
        from .lecture import run_lecture
        return run_lecture(args.section, fast=args.fast, out=args.out)
    if args.command == "assignments":
        from .assignments import run_assignments
        return run_assignments(args)
    if args.command == "equations":
        from .equations import run_equations
        return run_equations(args)
    if args.command == "list":
        from .data import list_datasets
        from .models import registry
        print("models (minigen train MODEL):")
        for spec in registry().values():
            print(f"  {spec.name:16s} {spec.summary}")
        print("datasets (--data NAME):")
        for name, text in list_datasets().items():
            print(f"  {name:16s} {text}")
        return 0
    if args.command == "train":
        from .models import get_spec
        from .runs import train
        run_dir, last = train(get_spec(args.model), train_config(args), progress=not args.no_progress)
        print(f"run folder: {run_dir}")
        print(json.dumps(last))
        return 0
    if args.command == "eval":
        from .models.experiments import EXPERIMENTS, run_experiment
        from .runs import evaluate
        if args.run in EXPERIMENTS and not os.path.exists(os.path.join(args.run, "config.json")):
            from .train import write_json
            result = run_experiment(args.run, args)
            write_json(os.path.join(args.out or os.path.join("runs", args.run), args.output or "eval.json"), result)
            print(json.dumps(result, indent=2))
            return 0
        print(json.dumps(evaluate(args.run, args, progress=not args.no_progress), indent=2))
        return 0
    if args.command == "sample":
        from .runs import sample
        print(sample(args.run, args.n, args.out, args.seed, sampler_options(args), device=args.device))
        return 0
    if args.command == "demo":
        from .demo import run_demo
        print(run_demo(args))
        return 0
    raise AssertionError(args.command)


def _add_device_argument(parser) -> None:
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the model computes: cpu (NumPy + Numba) or cuda (CuPy; the [gpu] extra) "
                             "(default: cpu)")


def _add_sampler_arguments(parser):
    group = parser.add_argument_group("samplers (diffusion models)")
    group.add_argument("--sampler", choices=["ddpm", "ddim"], help="ddpm: Algorithm 2 over all T steps (default); "
                                                                   "ddim: --steps of them")
    group.add_argument("--steps", type=_positive_int, help="ddim: sampling steps (default: 50)")
    group.add_argument("--guidance", type=float, help="conditional diffusion: classifier-free guidance w (default: 0)")
    return group


def sampler_options(args) -> dict:
    """The sampler options given on the command line, as ``model.sample`` keywords."""
    return {k: v for k in ("sampler", "steps", "guidance", "caption") if (v := getattr(args, k, None)) is not None}


def main(argv=None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; returns the exit status.

    130 on Ctrl-C; 2 after a one-line error on stderr for a ``ValueError``, ``TypeError``,
    ``FileNotFoundError``, ``RuntimeError`` or ``OSError`` (``MINIGEN_DEBUG=1`` re-raises it).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except KeyboardInterrupt:
        print("minigen: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, OSError) as err:
        if os.environ.get("MINIGEN_DEBUG"):
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"minigen {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
