"""``Module``: a model as a dict of its parameters (arrays) and its children (modules, and lists and dicts of
them), as MLX's ``mlx.nn.Module``.

Attributes that hold arrays, dicts, lists or tuples live in the dict (``m.weight`` reads ``m["weight"]``), so a
module is a tree that ``tree_flatten``, ``mx.eval`` and the transforms walk; other attributes (sizes, flags,
functions) are ordinary instance attributes. Keys that start with ``_`` are kept out of ``parameters()``.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from typing import Any

import umx as mx
from umx.utils import tree_flatten, tree_unflatten


class Module(dict):
    """Base class for neural network layers and models.

    A module holds its parameters (arrays) and its sub-modules as dict entries, so it can be passed to
    ``mx.eval``, ``mx.grad`` and the tree utilities. Subclasses set attributes in ``__init__`` and define
    ``__call__``.

    Example:
        >>> class MLP(nn.Module):
        ...     def __init__(self, dims):
        ...         super().__init__()
        ...         self.layers = [nn.Linear(dims, dims), nn.Linear(dims, 1)]
        ...     def __call__(self, x):
        ...         return self.layers[1](nn.relu(self.layers[0](x)))
    """

    __call__: Callable

    def __init__(self):
        self._no_grad = set()
        self._training = True

    @property
    def training(self) -> bool:
        """bool: whether the module is in training mode (see :meth:`train` and :meth:`eval`)."""
        return self._training

    @property
    def state(self) -> Module:
        """The module's whole state (parameters, frozen ones included, and any other arrays): the module itself,
        since a module is a dict."""
        return self

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = tree_flatten(self.children(), is_leaf=self.is_module)
        text = f"{type(self).__name__}({self._extra_repr()}"
        for path, child in children:
            text += "\n" + textwrap.indent(f"({path}): {child!r}", prefix="  ")
        if children:
            text += "\n"
        return text + ")"

    def __getattr__(self, key: str):
        if key in self:
            return self[key]
        raise AttributeError(f"{type(self)!r} has no attribute {key!r}")

    def __setattr__(self, key: str, val: Any):
        if isinstance(val, (mx.array, dict, list, tuple)):
            if key in self.__dict__:
                object.__delattr__(self, key)
            self[key] = val
        else:
            if key in self:
                del self[key]
            super().__setattr__(key, val)

    def __delattr__(self, name: str):
        if name in self:
            del self[name]
        else:
            super().__delattr__(name)

    # -- weights on disk ------------------------------------------------------------------------------------------

    def load_weights(self, file_or_weights: str | list[tuple[str, mx.array]], strict: bool = True) -> Module:
        """Update the parameters from a ``.npz`` or ``.safetensors`` file or a list of ``(path, array)`` pairs.

        Args:
            file_or_weights (str | list[tuple[str, array]]): a file path, or the weights with their dotted paths.
            strict (bool): require exactly the model's parameters, with their shapes (ValueError otherwise);
                when False, weights the model lacks are ignored and missing ones keep their values.
                Default: ``True``.

        Returns:
            Module: the module, updated in place.
        """
        weights = file_or_weights
        if isinstance(weights, (str, os.PathLike)):
            weights = list(mx.load(os.fspath(weights)).items())
        current = dict(tree_flatten(self.parameters()))
        if strict:
            given = dict(weights)
            extras = sorted(given.keys() - current.keys())
            if extras:
                raise ValueError(f"Received {len(extras)} parameters not in model: \n" + ",\n".join(extras) + ".")
            missing = sorted(current.keys() - given.keys())
            if missing:
                raise ValueError(f"Missing {len(missing)} parameters: \n" + ",\n".join(missing) + ".")
            for path, value in current.items():
                new = given[path]
                if not isinstance(new, mx.array):
                    raise ValueError(f"Expected mx.array but received {type(new)} for parameter {path}")
                if new.shape != value.shape:
                    raise ValueError(f"Expected shape {value.shape} but received shape {new.shape} for "
                                     f"parameter {path}")
        else:
            # paths of layers the model lacks would make tree_unflatten build lists longer than the model's
            weights = [(k, v) for k, v in weights if k in current]
        if weights:
            self.update(tree_unflatten(weights), strict=False)
        return self

    def save_weights(self, file: str):
        """Save the parameters to ``file``: ``.npz`` through ``mx.savez``, ``.safetensors`` through
        ``mx.save_safetensors``.

        Args:
            file (str): the path; its extension chooses the format.
        """
        params = dict(tree_flatten(self.parameters()))
        file = os.fspath(file)
        if file.endswith(".npz"):
            mx.savez(file, **params)
        elif file.endswith(".safetensors"):
            mx.save_safetensors(file, params)
        else:
            raise ValueError("Unsupported file extension. Use '.npz' or '.safetensors'.")

    # -- walking the tree -----------------------------------------------------------------------------------------

    @staticmethod
    def is_module(value) -> bool:
        """Whether ``value`` is a :class:`Module` (an ``is_leaf`` for the tree utilities)."""
        return isinstance(value, Module)

    @staticmethod
    def valid_child_filter(module, key, value) -> bool:
        """Entries that may hold children: dicts (modules too) and lists."""
        return isinstance(value, (dict, list))

    @staticmethod
    def valid_parameter_filter(module, key, value) -> bool:
        """Entries that may hold parameters: arrays, dicts and lists whose key does not start with ``_``."""
        return isinstance(value, (dict, list, mx.array)) and not key.startswith("_")

    @staticmethod
    def trainable_parameter_filter(module, key, value) -> bool:
        """Parameter entries that are not frozen in ``module``."""
        return Module.valid_parameter_filter(module, key, value) and key not in module._no_grad

    def filter_and_map(self, filter_fn: Callable[[Module, str, Any], bool], map_fn: Callable | None = None,
                       is_leaf_fn: Callable[[Module, str, Any], bool] | None = None) -> dict:
        """Walk the module's entries, keeping those ``filter_fn`` accepts and applying ``map_fn`` to leaves.

        Args:
            filter_fn (Callable): ``filter_fn(module, key, value)``; a key inside a dict or list entry is dotted
                (``"layers.0"``) and ``module`` is the module that owns the entry.
            map_fn (Callable, optional): applied to each leaf kept. Default: identity.
            is_leaf_fn (Callable, optional): ``is_leaf_fn(module, key, value)``; default: anything that is not
                a module, dict or list.

        Returns:
            dict: the filtered tree; a list position that is filtered out becomes ``{}``.
        """
        map_fn = map_fn or (lambda x: x)
        is_leaf_fn = is_leaf_fn or (lambda m, k, v: not isinstance(v, (Module, dict, list)))

        def walk(owner, key, value):
            if is_leaf_fn(owner, key, value):
                return map_fn(value)
            if isinstance(value, Module):
                return {k: walk(value, k, v) for k, v in value.items() if filter_fn(value, k, v)}
            if isinstance(value, dict):
                out = {}
                for k, v in value.items():
                    path = f"{key}.{k}"
                    out[k] = walk(owner, path, v) if filter_fn(owner, path, v) else {}
                return out
            if isinstance(value, list):
                out = []
                for i, v in enumerate(value):
                    path = f"{key}.{i}"
                    out.append(walk(owner, path, v) if filter_fn(owner, path, v) else {})
                return out
            raise RuntimeError(f"Unexpected leaf {type(value).__name__} found while traversing the module")

        return {k: walk(self, k, v) for k, v in self.items() if filter_fn(self, k, v)}

    def parameters(self) -> dict:
        """All parameters (frozen ones too) as a tree of dicts and lists."""
        if type(self).valid_parameter_filter is _VALID:  # (every training step asks: see _parameters)
            return _parameters(self, False)
        return self.filter_and_map(self.valid_parameter_filter)

    def trainable_parameters(self) -> dict:
        """The parameters that are not frozen, as a tree of dicts and lists."""
        if type(self).trainable_parameter_filter is _TRAINABLE:
            return _parameters(self, True)
        return self.filter_and_map(self.trainable_parameter_filter)

    def children(self) -> dict:
        """The direct sub-modules, as a tree of dicts and lists (a list position without a module is ``{}``)."""
        return self.filter_and_map(self.valid_child_filter, is_leaf_fn=lambda m, k, v: isinstance(v, Module))

    def leaf_modules(self) -> dict:
        """The sub-modules that have no children of their own, in the tree that leads to them."""

        def is_leaf_module(m, k, v):
            return isinstance(v, Module) and not tree_flatten(v.children())

        return self.filter_and_map(self.valid_child_filter, is_leaf_fn=is_leaf_module)

    def update(self, parameters: dict, strict: bool = True) -> Module:
        """Replace parameters with the arrays of ``parameters``, a tree shaped like (a part of) ``parameters()``.

        Args:
            parameters (dict): the new values.
            strict (bool): raise ValueError for a key the module lacks or a value that is not an array where
                the module has one. Default: ``True``.

        Returns:
            Module: the module, updated in place.
        """

        def put(dst, key, new):
            if isinstance(dst[key], mx.array):
                if strict and not isinstance(new, mx.array):
                    raise ValueError(f"Received invalid type: {type(new).__name__}.")
                dst[key] = new
            else:
                apply(dst[key], new)

        def apply(dst, new):
            if isinstance(new, dict):
                for k, v in new.items():
                    if isinstance(dst, dict) and k in dst:
                        put(dst, k, v)
                    elif strict:
                        raise ValueError(f'Module does not have parameter named "{k}".')
            elif isinstance(new, list):
                for i, v in enumerate(new):
                    if isinstance(dst, list) and i < len(dst):
                        put(dst, i, v)
                    elif strict:
                        raise ValueError(f"Module does not have a parameter at position {i}.")
            elif strict:
                raise ValueError(f"Received invalid type: {type(new).__name__}.")

        apply(self, parameters)
        return self

    def apply(self, map_fn: Callable[[mx.array], mx.array],
              filter_fn: Callable[[Module, str, Any], bool] | None = None) -> Module:
        """Replace each parameter ``p`` (those ``filter_fn`` keeps) by ``map_fn(p)``.

        Args:
            map_fn (Callable): the new value of a parameter.
            filter_fn (Callable, optional): which entries to map; default :meth:`valid_parameter_filter`.

        Returns:
            Module: the module, updated in place.
        """
        filter_fn = filter_fn or Module.valid_parameter_filter
        return self.update(self.filter_and_map(filter_fn, map_fn))

    def update_modules(self, modules: dict, strict: bool = True) -> Module:
        """Replace sub-modules with those of ``modules``, a tree shaped like (a part of) ``children()``.

        Args:
            modules (dict): the new sub-modules; ``{}`` leaves a position unchanged.
            strict (bool): raise ValueError for a key or position the module lacks, or a value that is not a
                module where one is expected. Default: ``True``.

        Returns:
            Module: the module, updated in place.
        """

        def put(dst, key, new):
            current = dst[key]
            if isinstance(current, Module) and isinstance(new, Module):
                dst[key] = new
            elif isinstance(current, (dict, list)):
                apply(current, new)
            elif strict and not (isinstance(new, dict) and not new):
                raise ValueError(f"Received invalid type: {type(new).__name__}.")

        def apply(dst, new):
            if isinstance(new, dict):
                for k, v in new.items():
                    if isinstance(dst, dict) and k in dst:
                        put(dst, k, v)
                    elif strict:
                        raise ValueError(f'Module does not have sub-module named "{k}".')
            elif isinstance(new, list):
                for i, v in enumerate(new):
                    if isinstance(dst, list) and i < len(dst):
                        put(dst, i, v)
                    elif strict:
                        raise ValueError(f"Module does not have a sub-module at position {i}.")
            elif strict:
                raise ValueError(f"Received invalid type: {type(new).__name__}.")

        apply(self, modules)
        return self

    def apply_to_modules(self, apply_fn: Callable[[str, Module], Any]) -> Module:
        """Call ``apply_fn(path, module)`` on this module (path ``""``) and every sub-module.

        Returns:
            Module: the module.
        """
        stack = [("", self)]
        while stack:
            prefix, module = stack.pop()
            apply_fn(prefix, module)
            stack.extend(tree_flatten(module.children(), prefix="." + prefix if prefix else "",
                                      is_leaf=self.is_module))
        return self

    def modules(self) -> list[Module]:
        """This module and all its sub-modules, as a list."""
        found: list = []
        self.apply_to_modules(lambda _, m: found.append(m))
        return found

    def named_modules(self) -> list[tuple[str, Module]]:
        """``(path, module)`` for this module (path ``""``) and all its sub-modules."""
        found: list = []
        self.apply_to_modules(lambda path, m: found.append((path, m)))
        return found

    # -- freezing -------------------------------------------------------------------------------------------------

    def _check_keys(self, keys, strict: bool, recurse: bool) -> list | None:
        if keys is None:
            return None
        keys = [keys] if isinstance(keys, str) else list(keys)
        if strict:
            owners = self.modules() if recurse else [self]
            for k in keys:
                if not any(k in m for m in owners):
                    raise KeyError(f"Module doesn't contain member {k}.")
        return keys

    def freeze(self, *, recurse: bool = True, keys: str | list[str] | None = None, strict: bool = False) -> Module:
        """Exclude parameters from :meth:`trainable_parameters` (and so from gradients of ``nn.value_and_grad``).

        Args:
            recurse (bool): freeze the sub-modules too. Default: ``True``.
            keys (str | list[str], optional): only these parameter names (e.g. ``"bias"``); default all.
            strict (bool): raise KeyError for a key no (walked) module has. Default: ``False``.

        Returns:
            Module: the module.
        """
        keys = self._check_keys(keys, strict, recurse)

        def freeze_one(_, m):
            names = keys
            if names is None:
                local = m.filter_and_map(lambda mod, k, v: not isinstance(v, Module)
                                         and mod.valid_parameter_filter(mod, k, v))
                names = [path for path, _ in tree_flatten(local)]
            m._no_grad.update(names)

        if recurse:
            self.apply_to_modules(freeze_one)
        else:
            freeze_one("", self)
        return self

    def unfreeze(self, *, recurse: bool = True, keys: str | list[str] | None = None,
                 strict: bool = False) -> Module:
        """Make frozen parameters trainable again. Arguments as :meth:`freeze`.

        Returns:
            Module: the module.
        """
        keys = self._check_keys(keys, strict, recurse)

        def unfreeze_one(_, m):
            if keys is None:
                m._no_grad.clear()
            else:
                m._no_grad.difference_update(keys)

        if recurse:
            self.apply_to_modules(unfreeze_one)
        else:
            unfreeze_one("", self)
        return self

    # -- modes and dtypes -----------------------------------------------------------------------------------------

    def _set_training_mode(self, mode: bool) -> None:
        self._training = mode

    def train(self, mode: bool = True) -> Module:
        """Set training mode (which e.g. ``Dropout`` and ``BatchNorm`` read) on this module and its sub-modules.

        Args:
            mode (bool): training (``True``) or evaluation (``False``). Default: ``True``.

        Returns:
            Module: the module.
        """
        return self.apply_to_modules(lambda _, m: m._set_training_mode(mode))

    def eval(self) -> Module:
        """Set evaluation mode: ``train(False)``."""
        return self.train(False)

    def set_dtype(self, dtype: mx.Dtype,
                  predicate: Callable[[mx.Dtype], bool] | None = lambda x: mx.issubdtype(x, mx.floating)):
        """Cast the parameters whose dtype ``predicate`` accepts to ``dtype``.

        Args:
            dtype (Dtype): the new dtype.
            predicate (Callable, optional): which dtypes to cast; default floating ones; ``None`` casts all.
        """
        if predicate is None:
            def predicate(_):
                return True
        self.apply(lambda x: x.astype(dtype) if predicate(x.dtype) else x)


_VALID = Module.valid_parameter_filter
_TRAINABLE = Module.trainable_parameter_filter
_CONTAINERS = (dict, list)


def _parameters(module: Module, trainable: bool) -> dict:
    """``module.filter_and_map(filter)`` for the two parameter filters (``trainable``: the unfrozen ones), walked
    without a call of the filter for each entry: the same tree, a few times faster (``parameters()`` and
    ``trainable_parameters()`` run at every step of a training loop)."""
    frozen = module._no_grad if trainable else None
    out = {}
    for k, v in module.items():
        if k.startswith("_") or (frozen and k in frozen):
            continue
        if isinstance(v, mx.array):
            out[k] = v
        elif isinstance(v, Module):
            out[k] = _parameters(v, trainable)
        elif isinstance(v, _CONTAINERS):
            out[k] = _parameters_in(v, k, frozen, trainable)
    return out


def _parameters_in(value, key: str, frozen, trainable: bool):
    """The parameter tree of ``value``, a dict or list at dotted path ``key`` of a module's entries (``frozen``: the
    module's frozen paths, or None): an entry the filter refuses (not an array, dict or list; a frozen path) stands
    as ``{}``, as in ``filter_and_map``."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    out = {} if isinstance(value, dict) else []
    for k, v in items:
        if frozen and f"{key}.{k}" in frozen:
            got = {}
        elif isinstance(v, mx.array):
            got = v
        elif isinstance(v, Module):
            got = _parameters(v, trainable)
        elif isinstance(v, _CONTAINERS):
            got = _parameters_in(v, f"{key}.{k}", frozen, trainable)
        else:
            got = {}
        if out.__class__ is list:
            out.append(got)
        else:
            out[k] = got
    return out
