"""A run from the command line: data + model + trainer, and the way back from a run folder.

``minigen train`` calls :func:`train`, which turns the parsed options into a
dataset, a loader, a model (through the family's :class:`~minigen.models.ModelSpec`),
an optimizer and a :class:`~minigen.train.Trainer`. ``config.json`` records
every option, so :func:`load_run` can rebuild the same model for ``sample``
and ``eval`` from the run folder alone.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import sys

import numpy as np

from . import random as mg_random

__all__ = ["train", "load_run", "load_data", "fixed_binarization", "evaluate", "sample"]


def load_data(cfg: dict, split: str):
    """The dataset a run's config names, for ``split`` (``train`` / ``test``)."""
    from .data import TOY_DATASETS, load_dataset, toy_dataset

    if cfg["data"] in TOY_DATASETS:
        return toy_dataset(cfg["data"], split)
    binarize = "static" if cfg["data"] == "binarized-mnist" else cfg.get("binarize", "none")
    return load_dataset(cfg["data"], split, data_dir=cfg.get("data_dir"), download=not cfg.get("no_download"),
                        binarize=binarize)


def fixed_binarization(dataset, seed: int) -> np.ndarray:
    """Test images for evaluation: one fixed Bernoulli draw per pixel for dynamically binarized data.

    A model trained on fresh binarizations each epoch is scored on a single
    draw of the test set (seeded, so every evaluation sees the same one).
    """
    if dataset.binarize != "dynamic":
        return dataset.images
    from .data import dynamic_binarize
    return dynamic_binarize(dataset.images, np.random.default_rng([seed, 2]))


def scoring_subset(total: int, n: int | None, seed: int) -> np.ndarray:
    """Indices of ``n`` of ``total`` test examples for a quicker score: a seeded random subset.

    Not the first ``n``: test files may be sorted by class (the fixed
    binarization of MNIST is: its first 1000 images are all zeros and ones).
    """
    if n is None or n >= total:
        return np.arange(total)
    return np.random.default_rng([seed, 3]).choice(total, n, replace=False)


def train(spec, cfg: dict, progress: bool = True) -> tuple:
    """Train ``spec``'s model as ``cfg`` says; returns ``(run_dir, last logged row)``."""
    from .optim import EMA, Adam, CosineAnnealingLR
    from .train import Trainer

    mg_random.manual_seed(cfg["seed"])
    train_set = load_data(cfg, "train")
    per_step = spec.examples_per_step(cfg) if spec.examples_per_step else cfg["batch_size"]
    loader = train_set.loader(per_step, shuffle=True, seed=cfg["seed"], drop_last=True)
    cfg = {**cfg, "image_shape": list(train_set.image_shape), "train_examples": len(train_set),
           "num_classes": train_set.num_classes}
    model = spec.build(cfg, train_set.image_shape).to(cfg.get("device", "cpu"))
    steps = cfg["steps"] or cfg["epochs"] * len(loader)
    cfg["total_steps"] = steps
    optimizer = scheduler = step_fn = None
    extra_state = {}
    if cfg["schedule"] not in spec.schedules:
        raise ValueError(f"--schedule {cfg['schedule']}: model {spec.name!r} supports --schedule "
                         f"{' or '.join(spec.schedules)}")
    ema = None
    if not 0.0 <= cfg.get("ema", 0.0) < 1.0:
        raise ValueError(f"--ema: the decay must lie in [0, 1), got {cfg['ema']}")
    if spec.trainer_step is not None:
        if cfg.get("ema"):
            raise ValueError(f"--ema: model {spec.name!r} trains with its own update, which keeps no average")
        step_fn, extra_state = spec.trainer_step(model, cfg, train_set.images)
    else:
        optimizer = Adam(model.parameters(), lr=cfg["lr"])
        scheduler = (CosineAnnealingLR(optimizer, T_max=steps, eta_min=cfg["lr"] * cfg["min_lr_ratio"])
                     if cfg["schedule"] == "cosine" else None)
        ema = EMA(model, cfg["ema"]) if cfg.get("ema") else None

    @functools.cache
    def all_test_images():       # read once, for both the periodic scores and the final figures
        return fixed_binarization(load_data(cfg, "test"), cfg["seed"])

    def test_images(n):
        images = all_test_images()
        return images[scoring_subset(len(images), n, cfg["seed"])]

    eval_fn = None
    if cfg.get("eval_every") and spec.periodic_eval is not None:
        eval_fn = spec.periodic_eval(model, test_images(cfg["eval_examples"]), cfg)

    def sample_fn():            # image grids; points (2-D toys) are drawn by the family's figures
        model.eval()
        images = np.asarray(model.sample(64))
        model.train()
        return images.reshape(len(images), *train_set.image_shape)

    run_dir = os.path.join(cfg["runs_dir"], cfg["name"])
    trainer = Trainer(run_dir, model, loader, steps, optimizer=optimizer, scheduler=scheduler, ema=ema,
                      step_fn=step_fn, state=extra_state, config=cfg, checkpoint_every=cfg["checkpoint_every"], log_every=cfg["log_every"],
                      sample_fn=sample_fn if len(train_set.image_shape) > 1 and hasattr(model, "sample") else None, sample_every=cfg["sample_every"], eval_fn=eval_fn,
                      eval_every=cfg.get("eval_every"), clip_grad_norm=cfg.get("clip_grad_norm"),
                      time_limit=cfg.get("time_limit"), progress=progress,
                      detect_anomaly=cfg.get("detect_anomaly", False))
    last = trainer.fit(resume=cfg["resume"])
    if spec.figures is not None:
        model.eval()
        # Families whose figures take minutes (pixel-by-pixel samplers) show a bar unless --no-progress.
        slow = "progress" in inspect.signature(spec.figures).parameters
        spec.figures(model, run_dir, test_images(1000), **({"progress": progress} if slow else {}))
    return run_dir, last


def load_run(run_dir: str, device: str = "cpu"):
    """``(spec, config, model)`` of a run folder, with the last checkpoint's weights, on ``device`` (wherever
    the run was trained)."""
    from .models import get_spec
    from .serialization import load
    from .train import CHECKPOINT

    config_path = os.path.join(run_dir, "config.json")
    ckpt_path = os.path.join(run_dir, CHECKPOINT)
    for path in (config_path, ckpt_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{run_dir} is not a finished run folder: {os.path.basename(path)} is missing")
    with open(config_path) as f:
        cfg = json.load(f)
    spec = get_spec(cfg["model"])
    model = spec.build(cfg, tuple(cfg["image_shape"])).to(device)
    state = load(ckpt_path, map_location=device)["state"]
    model.load_state_dict(state["model"])
    if "ema" in state:                      # a run trained with --ema is used with its averaged weights
        from .optim import EMA
        ema = EMA(model)
        ema.load_state_dict(state["ema"])
        ema.copy_to()
    model.eval()
    return spec, cfg, model


def evaluate(run_dir: str, args, progress: bool = True) -> dict:
    """Score a run on its test set; writes ``eval.json`` in the run folder and returns the metrics."""
    from .train import write_json

    spec, cfg, model = load_run(run_dir, getattr(args, "device", "cpu"))
    if spec.evaluate is None:
        raise ValueError(f"model {cfg['model']!r} has no evaluation yet")
    mg_random.manual_seed(args.seed)
    train_set, test_set = load_data(cfg, "train"), load_data(cfg, "test")
    keep = scoring_subset(len(test_set), args.limit, args.seed)
    scored = dataclasses.replace(test_set, images=fixed_binarization(test_set, args.seed)[keep],
                                 labels=None if test_set.labels is None else test_set.labels[keep])
    probe_train = dataclasses.replace(train_set, images=fixed_binarization(train_set, args.seed))
    metrics = {"run": os.path.abspath(run_dir), "model": cfg["model"], "data": cfg["data"],
               "binarize": scored.binarize, "seed": args.seed,
               "command": " ".join(["minigen"] + sys.argv[1:]) if sys.argv else None}
    metrics.update(spec.evaluate(model, probe_train, scored, args, progress=progress))
    write_json(os.path.join(run_dir, args.output or "eval.json"), metrics)
    return metrics


def sample(run_dir: str, n: int, out: str | None, seed: int, options: dict | None = None,
           device: str = "cpu") -> str:
    """Draw ``n`` samples from a run's model into a PNG grid; returns its path. ``options`` are sampler
    keywords (``sampler``, ``steps``, ``guidance``) for the models that take them, and ``caption`` for latent
    diffusion; ``device`` is where the model samples."""
    from .viz import save_image_grid, scatter_2d

    _, cfg, model = load_run(run_dir, device)
    options = dict(options or {})
    caption = options.pop("caption", None)
    if caption is not None:
        if not hasattr(model, "condition_tokens"):
            raise ValueError(f"sample: --caption is for latent_diffusion runs, not {cfg['model']}")
        model.condition_tokens([caption])                   # a clear error for an unknown word, before sampling
        options["labels"] = [caption] * n
    unknown = sorted(set(options) - set(inspect.signature(model.sample).parameters))
    if unknown:
        raise ValueError(f"sample: a {cfg['model']} run takes no --{' --'.join(unknown)} option")
    mg_random.manual_seed(seed)
    path = out or os.path.join(run_dir, f"samples_n{n}_seed{seed}.png")
    if len(cfg["image_shape"]) == 1:                       # points of a 2-D toy density
        return scatter_2d(np.asarray(model.sample(n)), path, title=f"{n} samples of {cfg['name']}")
    # Autoregressive models sample pixel by pixel (minutes at 28x28): they take a progress bar.
    slow = "progress" in inspect.signature(model.sample).parameters
    images = np.asarray(model.sample(n, progress=True, **options) if slow else model.sample(n, **options))
    images = images.reshape(n, *cfg["image_shape"])
    return save_image_grid(images, path, nrow=int(math.ceil(math.sqrt(n))))
