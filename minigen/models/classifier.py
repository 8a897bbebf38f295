r"""A digit classifier — the judge of generated samples (GANs, diffusion).

Sample quality without likelihoods is measured through a network trained on
the real data (Heusel et al. 2017 use Inception; on MNIST a small CNN is the
usual stand-in):

* the **Fréchet distance** between Gaussians fitted to the classifier's
  penultimate features of samples and of test images
  (:func:`minigen.metrics.frechet_distance`);
* for a class-conditional model, how often the classifier recognises the class
  that was asked for;
* for an unconditional model, how many classes its samples cover.

``minigen train classifier --data mnist`` trains it (≥ 99 % test accuracy in a
few minutes on two cores); sample scores load it from its run folder.
"""
from __future__ import annotations

import os

import numpy as np

from .. import nn, ops
from ..autograd import Tensor, no_grad

__all__ = ["DigitClassifier", "add_classifier_arguments", "build_classifier", "evaluate_classifier",
           "load_classifier", "sample_scores", "add_sample_scoring_arguments", "judge_samples"]


def _conv_block(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class DigitClassifier(nn.Module):
    """Two stages of (3×3 conv → BN → ReLU) × 2 → 2×2 max-pool, a hidden layer of ``features`` units
    (the features sample scores use), dropout, and the class logits."""

    def __init__(self, image_shape=(1, 28, 28), num_classes: int = 10, width: int = 32, features: int = 128):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"DigitClassifier: image sides must be divisible by 4, got {h}x{w}")
        self.image_shape, self.num_classes = tuple(image_shape), int(num_classes)
        self.body = nn.Sequential(*_conv_block(c, width), *_conv_block(width, width), nn.MaxPool2d(2),
                                  *_conv_block(width, 2 * width), *_conv_block(2 * width, 2 * width),
                                  nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(2 * width * (h // 4) * (w // 4), features), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(features, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations (N, features)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def loss(self, batch):
        """Cross-entropy of an ``(images, labels)`` batch and the metrics the trainer logs (loss, accuracy);
        a ValueError for a batch without labels."""
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("DigitClassifier: training needs (images, labels) batches: data with labels")
        x, y = ops.tensor(batch[0], device=self.device), ops.tensor(batch[1], dtype="int64", device=self.device)
        logits = self(x)
        loss = ops.cross_entropy(logits, y)
        accuracy = float((logits.detach().numpy().argmax(1) == y.numpy()).mean())
        return loss, {"loss": float(loss.item()), "accuracy": accuracy}

    def predict(self, images, batch_size: int = 500) -> tuple:
        """``(class predictions (N,), features (N, F))`` of images in [0, 1], in evaluation mode."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(f"DigitClassifier.predict: images must be (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {images.shape}")
        was_training = self.training
        self.eval()
        preds, feats = [], []
        try:
            with no_grad():
                for i in range(0, len(images), batch_size):
                    f = self.features(ops.tensor(images[i:i + batch_size], device=self.device))
                    preds.append(self.head(f).numpy().argmax(1))
                    feats.append(f.numpy())
        finally:
            self.train(was_training)
        return np.concatenate(preds), np.concatenate(feats).astype(np.float64)


def add_classifier_arguments(parser) -> None:
    """The options of ``minigen train classifier``: ``--width`` of the first stage and ``--features``."""
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage (default: 32)")
    parser.add_argument("--features", type=int, default=128, help="units of the feature layer (default: 128)")


def build_classifier(cfg: dict, image_shape) -> DigitClassifier:
    """The :class:`DigitClassifier` ``minigen train classifier`` trains, from a run's config and the data's
    image shape; a ValueError for data that are not images or have no labels."""
    if len(image_shape) != 3:
        raise ValueError(f"classifier: needs images (C, H, W), got data of shape {tuple(image_shape)}")
    if not cfg.get("num_classes"):
        raise ValueError("classifier: the data has no class labels")
    return DigitClassifier(tuple(image_shape), cfg["num_classes"], cfg["width"], cfg["features"])


def evaluate_classifier(model: DigitClassifier, train, test, args, progress: bool = False) -> dict:
    """The accuracy of the classifier's predictions on the test images, and their number."""
    pred, _ = model.predict(test.images)
    return {"test_accuracy": float((pred == test.labels).mean()), "test_examples": int(len(pred))}


def load_classifier(run_dir: str, device: str = "cpu") -> DigitClassifier:
    """The classifier of a finished ``minigen train classifier`` run, on ``device``."""
    from ..runs import load_run
    if not os.path.exists(os.path.join(run_dir, "config.json")):
        raise FileNotFoundError(f"no classifier run at {run_dir}: train one with `minigen train classifier "
                                f"--data mnist --name {os.path.basename(os.path.normpath(run_dir))}` "
                                f"or pass --classifier RUN")
    _, _, model = load_run(run_dir, device)
    if not isinstance(model, DigitClassifier):
        raise ValueError(f"{run_dir} is not a classifier run")
    return model


def add_sample_scoring_arguments(parser) -> None:
    """The ``minigen eval`` options of the models whose samples the digit classifier scores: the judging
    ``--classifier`` run and the number of ``--samples``."""
    parser.add_argument("--classifier", metavar="RUN",
                        help="the `minigen train classifier` run that scores samples (default: runs/<data>-classifier)")
    parser.add_argument("--samples", type=int, default=10000,
                        help="samples scored against the test set; cyclegan: test images translated; ddpm: 0 skips "
                             "the samples (only --bound) (default: 10000)")


add_sample_scoring_arguments.group_title = "image GANs, CycleGAN and DDPM runs (samples scored by a classifier)"


def judge_samples(draw, num_classes, train, test, args) -> dict:
    """The sample scores of an image model, by the data's classifier run (``--classifier``, default
    ``runs/<data>-classifier``): ``draw(count, labels)`` gives images in [0, 1]; ``--samples`` of them
    (labels cycling through the classes when ``num_classes``) are compared with the test set by
    :func:`sample_scores`, and as many held-out training images give the floor of the distance."""
    judge = load_classifier(getattr(args, "classifier", None) or os.path.join("runs", f"{train.name}-classifier"),
                            getattr(args, "device", "cpu"))                   # beside the model it judges
    n = int(getattr(args, "samples", 10000))
    requested = np.arange(n) % num_classes if num_classes else None
    samples = np.concatenate([draw(min(500, n - i), None if requested is None else requested[i:i + 500])
                              for i in range(0, n, 500)])
    _, test_features = judge.predict(test.images)         # once, for both distances
    scores = sample_scores(judge, samples, test_features, requested)
    rng = np.random.default_rng(0)
    held_out = train.images[rng.choice(len(train.images), min(n, len(train.images)), replace=False)]
    scores["frechet_distance_real"] = sample_scores(judge, held_out, test_features)["frechet_distance"]
    return scores


def sample_scores(classifier: DigitClassifier, samples, real_features, requested=None) -> dict:
    """Fréchet distance of ``samples`` to real images (``real_features``: their
    ``classifier.predict(images)[1]``, computed once by the caller) in the classifier's feature space, the classes
    it sees in the samples, and (with ``requested`` labels) how often it sees the requested class.

    A class counts as *covered* when at least a tenth of its fair share of the samples
    (1 % of them for 10 classes) is recognised as that class, so that a few odd samples
    of a collapsed generator do not count as coverage.
    """
    from ..metrics import frechet_distance
    pred, feats = classifier.predict(samples)
    hist = np.bincount(pred, minlength=classifier.num_classes)
    out = {"frechet_distance": frechet_distance(feats, real_features), "samples": int(len(pred)),
           "classes_covered": int((hist >= 0.1 * len(pred) / classifier.num_classes).sum()),
           "class_histogram": hist.tolist()}
    if requested is not None:
        out["class_accuracy"] = float((pred == np.asarray(requested)).mean())
    return out
