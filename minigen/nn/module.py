"""``Module`` and ``Parameter``: how a network keeps track of its own weights.

A :class:`Module` is a tree. Assigning an attribute sorts the value into one of
three ordered tables, exactly as in PyTorch:

* a :class:`Parameter` goes to ``_parameters`` (trained by the optimiser),
* a ``Module`` goes to ``_modules`` (a child: its parameters are ours too),
* a tensor given to :meth:`Module.register_buffer` goes to ``_buffers``
  (state that is saved but not trained, e.g. BatchNorm's running mean).

Everything else — ``parameters()``, ``state_dict()``, ``to(device)``,
``train()``/``eval()`` — is a walk over that tree. Parameters keep their
identity for life: ``to()``, ``double()`` and ``load_state_dict()`` replace or
overwrite each parameter's ``.data`` array, never the Parameter object, so an
optimiser built earlier still holds the right tensors.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import autograd, backend
from ..autograd import DEFAULT_DTYPE, Tensor, _as_array


class Parameter(Tensor):
    """A tensor that is a trainable weight of a :class:`Module`.

    ``Parameter(data)`` shares ``data``'s array (like PyTorch, no copy) and sets
    ``requires_grad=True``; Python numbers and lists become float32, arrays and
    tensors keep their dtype. Assigning one to a module attribute registers it.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = np.zeros((0,), dtype=DEFAULT_DTYPE)
        super().__init__(_as_array(data), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        result = Parameter(self.data.copy(), requires_grad=self.requires_grad)
        memo[id(self)] = result
        return result


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What :meth:`Module.load_state_dict` returns: keys it did not find / did not use."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


class RemovableHandle:
    """Returned by the ``register_*_hook`` methods; ``handle.remove()`` unregisters."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        """Unregister the hook; removing it again does nothing."""
        self._hooks.pop(self.id, None)


def _check_name(kind: str, name) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
    if name == "" or "." in name:
        raise KeyError(f"{kind} name can't be empty or contain '.', got {name!r}")


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    return "\n".join(lines[:1] + [" " * spaces + line for line in lines[1:]])


class Module:
    """Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign their parameters and
    sub-modules as attributes, and implement :meth:`forward`; calling the module
    runs ``forward`` (plus any hooks).
    """

    training: bool

    def __init__(self):
        for name, value in (("training", True), ("_parameters", OrderedDict()),
                            ("_buffers", OrderedDict()), ("_non_persistent_buffers", set()),
                            ("_modules", OrderedDict()), ("_forward_pre_hooks", OrderedDict()),
                            ("_forward_hooks", OrderedDict())):
            object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required '
                                  '"forward" function')

    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """``hook(module, args)`` runs before ``forward``; it may return new args."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook) -> RemovableHandle:
        """``hook(module, args, output)`` runs after ``forward``; it may return a new output."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ registration
    def _require_init(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call "
                                 f"(call super().__init__() first in {type(self).__name__})")

    def register_parameter(self, name: str, param) -> None:
        """Add a parameter (or ``None``, a declared-but-absent parameter such as ``bias``)."""
        self._require_init("parameters")
        _check_name("parameter", name)
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (minigen.nn.Parameter or None required)")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Add a tensor that is part of the state but not trained.

        Persistent buffers appear in :meth:`state_dict`; all buffers move with
        :meth:`to`. ``tensor`` may be ``None`` (declared but absent).
        """
        self._require_init("buffers")
        _check_name("buffer", name)
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer "
                            f"'{name}' (Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module) -> None:
        """Add a child module (or ``None``)."""
        self._require_init("child modules")
        _check_name("module", name)
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        tables = self.__dict__.get("_parameters"), self.__dict__.get("_buffers"), \
            self.__dict__.get("_modules")
        params, buffers, modules = tables
        if isinstance(value, Parameter):
            self._require_init("parameters")
            self._forget(name)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(minigen.nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            self._require_init("child modules")
            self._forget(name)
            modules[name] = value
        elif modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (Module or None expected)")
            modules[name] = None
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(Tensor or None expected)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        """Remove ``name`` from every table and the instance dict (before re-registering)."""
        self.__dict__.pop(name, None)
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self._non_persistent_buffers.discard(name)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the three tables.
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """Yield ``(dotted_name, module)`` for this module and every descendant, pre-order."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub, remove_duplicate)

    def modules(self):
        """Yield this module and every descendant, pre-order, each once."""
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        """Yield ``(name, child)`` for each direct child, skipping ``None`` and repeats."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        """Yield each direct child module once (``None`` entries skipped)."""
        for _, module in self.named_children():
            yield module

    def _named_members(self, table, prefix="", recurse=True, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) \
            if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, table).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True):
        """Yield ``(dotted_name, parameter)``; a shared parameter is listed once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        """Yield every parameter (only this module's own unless ``recurse``), each once."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True):
        """Yield ``(dotted_name, buffer)``, persistent or not; a shared buffer is listed once."""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        """Yield every buffer (only this module's own unless ``recurse``), each once."""
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_submodule(self, target: str) -> "Module":
        """The descendant at a dotted path such as ``'encoder.0'`` (``''`` is self)."""
        module = self
        for part in target.split(".") if target else []:
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no submodule '{part}' "
                                     f"(looking up '{target}')")
            module = child
        return module

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Total number of scalar weights (optionally only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on every descendant (children first) and on self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> "Module":
        """Set training mode here and in every descendant (affects Dropout, BatchNorm)."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be a bool, got {mode!r}")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> "Module":
        """Set evaluation mode here and in every descendant: ``train(False)``. Returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Set ``requires_grad`` of every parameter, in place (``False`` freezes the module). Returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to ``None``, or to zeros with ``set_to_none=False``."""
        autograd.zero_grad(self.parameters(), set_to_none)

    # ------------------------------------------------------------------ devices and dtypes
    @property
    def device(self) -> str:
        """The device of the module's parameters ("cuda" or "cpu"; of its buffers when it has no
        parameters, "cpu" when it has neither). Models create their inputs and noise there."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return "cpu"

    def _apply_to_arrays(self, convert) -> "Module":
        """Replace the array of every parameter, gradient and buffer by ``convert(array)``,
        keeping the Tensor objects themselves."""
        for module in self.modules():
            for table in (module._parameters, module._buffers):
                for t in table.values():
                    if t is None:
                        continue
                    t.data = convert(t.data)
                    if t.grad is not None:
                        t.grad.data = convert(t.grad.data)
        return self

    def to(self, device=None, dtype=None) -> "Module":
        """Move to ``device`` and/or cast floating-point state to ``dtype``, in place.

        ``module.to('cuda')``, ``module.to(np.float64)`` and
        ``module.to('cuda', np.float64)`` are all accepted; integer buffers
        (e.g. ``num_batches_tracked``) keep their dtype.
        """
        if isinstance(device, Tensor):
            device, dtype = device.device, device.dtype
        if device is not None and not isinstance(device, str):
            device, dtype = None, device  # to(dtype)
        if device is not None:
            device = backend.check_device(device)
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"Module.to only accepts floating dtypes, got {dtype}")

        def convert(array):
            if device is not None:
                array = backend.to_device(array, device)
            if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
                array = array.astype(dtype)
            return array

        return self._apply_to_arrays(convert)

    def cpu(self) -> "Module":
        """Move parameters, gradients and buffers to the CPU, in place. Returns self."""
        return self.to("cpu")

    def cuda(self) -> "Module":
        """Move parameters, gradients and buffers to the GPU, in place (``RuntimeError`` without CuPy)."""
        return self.to("cuda")

    def float(self) -> "Module":
        """Cast floating-point parameters and buffers to float32, in place. Returns self."""
        return self.to(dtype=np.float32)

    def double(self) -> "Module":
        """Cast floating-point parameters and buffers to float64, in place. Returns self."""
        return self.to(dtype=np.float64)

    # ------------------------------------------------------------------ state
    def _state_items(self, prefix=""):
        """``(key, tensor)`` for every parameter and persistent buffer, in PyTorch's order:
        a module's own parameters, then its own buffers, then each child's."""
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, p
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                yield prefix + name, b
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_items(prefix + name + ".")

    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """An ordered dict ``{dotted_key: tensor}`` of parameters and persistent buffers.

        Values are detached tensors that share memory with the module (as in
        PyTorch): clone them to keep a snapshot that later training won't change.
        """
        destination = OrderedDict() if destination is None else destination
        for key, t in self._state_items(prefix):
            destination[key] = t if keep_vars else t.detach()
        return destination

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values from ``state_dict`` into this module's tensors, in place.

        Values may be Tensors or arrays; they are cast to each target's dtype and
        device. Shape mismatches are always errors; with ``strict`` missing and
        unexpected keys are too. All problems are reported in one error, and
        nothing is copied unless the whole load can succeed.
        Returns ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"expected a mapping for state_dict, got {type(state_dict).__name__}")
        own = OrderedDict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors, copies = [], []
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            array = value.data if isinstance(value, Tensor) else value
            shape = tuple(getattr(array, "shape", np.shape(array)))
            if shape != target.shape:
                errors.append(f"size mismatch for {key}: copying a value with shape {shape} "
                              f"from the state_dict, the shape in the current model is "
                              f"{target.shape}")
                continue
            copies.append((target, array))
        if strict and unexpected:
            errors.insert(0, "Unexpected key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if strict and missing:
            errors.insert(0, "Missing key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in missing) + ".")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for target, array in copies:
            array = backend.to_device(_as_array(array), target.device)
            target.data[...] = array.astype(target.dtype, copy=False)
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's repr (override in layers)."""
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, module in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(module), 2))
        main = type(self).__name__ + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


def _new_tensor(*shape, device=None, dtype=None) -> Tensor:
    """A zero-filled tensor for a layer to initialise (``device``/``dtype`` as in
    PyTorch's factory keyword arguments; float32 on the CPU by default)."""
    xp = backend.xp_for(backend.check_device(device or "cpu"))
    return Tensor._wrap(xp.zeros(shape, dtype=np.dtype(dtype or DEFAULT_DTYPE)))


def _new_parameter(*shape, device=None, dtype=None) -> Parameter:
    return Parameter(_new_tensor(*shape, device=device, dtype=dtype))
