"""Neural-network building blocks: ``Module``, layers, initialisation, functional ops.

The names, argument orders, defaults, weight layouts and ``state_dict`` keys are
PyTorch's, so ``import minigen.nn as nn`` reads like ``import torch.nn as nn``::

    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 28 * 28, 10))

Layers are grouped by kind, one short file each: ``linear``, ``conv``,
``normalization``, ``activation``, ``regularization`` (Dropout, Embedding),
``container``, ``recurrent``, ``attention``, ``loss``.
"""
from . import functional, init, utils  # noqa: F401
from .activation import (ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax,
                         Softplus, Tanh)
from .attention import MultiheadAttention
from .container import ModuleDict, ModuleList, Sequential
from .conv import AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d, Upsample
from .linear import Flatten, Identity, Linear, Unflatten
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, KLDivLoss, L1Loss, MSELoss,
                   NLLLoss)
from .module import Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm
from .recurrent import LSTM, LSTMCell
from .regularization import Dropout, Embedding

__all__ = [
    "functional", "init", "utils", "Module", "Parameter",
    "Identity", "Linear", "Flatten", "Unflatten",
    "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "Upsample",
    "BatchNorm1d", "BatchNorm2d", "GroupNorm", "LayerNorm", "InstanceNorm2d",
    "ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softplus", "Softmax",
    "LogSoftmax", "Dropout", "Embedding", "Sequential", "ModuleList", "ModuleDict",
    "LSTMCell", "LSTM", "MultiheadAttention",
    "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss", "NLLLoss", "CrossEntropyLoss",
    "KLDivLoss",
]
