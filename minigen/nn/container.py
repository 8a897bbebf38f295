"""Containers: Sequential, ModuleList, ModuleDict.

Their children are registered like any attribute, under the names ``'0'``,
``'1'``, ... (or the dict keys), which is where state-dict keys such as
``'0.weight'`` come from.
"""
from __future__ import annotations

import operator
from collections import OrderedDict

from .module import Module


def _index(name, idx, length):
    """A valid non-negative position for ``idx`` in a container of ``length``."""
    idx = operator.index(idx)
    if not -length <= idx < length:
        raise IndexError(f"{name}: index {idx} is out of range for {length} modules")
    return idx % length


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: children numbered ``'0'``, ``'1'``, ...
    in order, with ``len``, iteration, ``append``/``extend``/``insert`` and ``del``
    (which renumber, like PyTorch)."""

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _renumber(self, modules) -> None:
        self._modules.clear()
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def __delitem__(self, idx):
        keys = list(self._modules)
        doomed = keys[idx] if isinstance(idx, slice) else [
            keys[_index(type(self).__name__, idx, len(keys))]]
        for key in doomed:
            del self._modules[key]
        if all(k.isdigit() for k in keys):  # named Sequential children keep their names
            self._renumber(list(self._modules.values()))

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module):
        name = type(self).__name__
        if not isinstance(module, Module):
            raise TypeError(f"{name}.insert: {type(module).__name__} is not a Module")
        n = len(self)
        if not -n <= index <= n:
            raise IndexError(f"{name}.insert: index {index} is out of range for {n} modules")
        modules = list(self._modules.values())
        modules.insert(index + n if index < 0 else index, module)  # PyTorch's rule
        self._renumber(modules)
        return self


class Sequential(_ModuleSequence):
    """Apply modules one after another: ``Sequential(a, b)(x) == b(a(x))``.

    Built from modules (named ``'0'``, ``'1'``, ...) or from one ordered dict of
    ``name: module``. Supports indexing, slicing (a new Sequential that shares the
    modules), ``len``, iteration, ``append``/``extend``/``insert`` and ``del``.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def __getitem__(self, idx):
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(items[idx]))
        return items[_index("Sequential", idx, len(items))][1]

    def __setitem__(self, idx, module):
        key = list(self._modules)[_index("Sequential", idx, len(self))]
        self.add_module(key, module)

    def forward(self, input):  # noqa: A002
        for module in self:
            input = module(input)
        return input


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters are registered (a plain Python list's would
    be invisible to ``parameters()``). It has no ``forward``: iterate over it."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[str(_index("ModuleList", idx, len(self)))]

    def __setitem__(self, idx, module):
        self.add_module(str(_index("ModuleList", idx, len(self))), module)

    def __iadd__(self, modules) -> "ModuleList":
        return self.extend(modules)


class ModuleDict(Module):
    """An ordered dict of named modules, registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str):
        return self._modules[key]

    def __setitem__(self, key: str, module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key) -> bool:
        return key in self._modules

    def keys(self):
        """The keys, in insertion order."""
        return self._modules.keys()

    def values(self):
        """The modules, in insertion order."""
        return self._modules.values()

    def items(self):
        """``(key, module)`` pairs, in insertion order."""
        return self._modules.items()

    def pop(self, key: str):
        """Remove the module under ``key`` and return it (``KeyError`` if there is none)."""
        return self._modules.pop(key)

    def clear(self) -> None:
        """Remove every module."""
        self._modules.clear()

    def update(self, modules) -> None:
        """Add or replace modules from a mapping or an iterable of ``(key, module)`` pairs, in order."""
        items = modules.items() if hasattr(modules, "items") else modules
        for key, module in items:
            self[key] = module
