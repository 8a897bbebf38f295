"""End-to-end proof: an MLP and a small conv net, trained with minigen alone on
scikit-learn's bundled 8x8 digits, reach >= 97% held-out accuracy."""
import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen import optim

datasets = pytest.importorskip("sklearn.datasets", reason="the [dev] extra installs scikit-learn")


def digits_split(seed=0, n_test=360):
    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def train(model, x, y, epochs, lr, batch_size=64, seed=0):
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(mg.tensor(x[idx])), mg.tensor(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return loss.item()


def accuracy(model, x, y):
    model.eval()
    with mg.no_grad():
        return float((model(mg.tensor(x)).argmax(dim=1).numpy() == y).mean())


def test_mlp_reaches_97_percent_on_digits():
    mg.manual_seed(0)
    (xtr, ytr), (xte, yte) = digits_split()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(128, 10))
    train(model, xtr, ytr, epochs=30, lr=3e-3)
    acc = accuracy(model, xte, yte)
    assert acc >= 0.97, f"MLP held-out accuracy {acc:.3f}"


def test_conv_net_reaches_97_percent_on_digits():
    mg.manual_seed(0)
    (xtr, ytr), (xte, yte) = digits_split()
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8)),                                  # (N, 8, 8) -> (N, 1, 8, 8)
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),   # 4x4
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )
    train(model, xtr, ytr, epochs=15, lr=3e-3)
    acc = accuracy(model, xte, yte)
    assert acc >= 0.97, f"conv net held-out accuracy {acc:.3f}"
