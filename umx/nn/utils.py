"""Helpers that tie function transforms to a model's parameters: ``value_and_grad`` and ``checkpoint``."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

import umx as mx


def value_and_grad(model, fn: Callable):
    """Transform ``fn`` into a function that also returns the gradients of its result with respect to
    ``model.trainable_parameters()``.

    Args:
        model (Module): the model whose trainable parameters are differentiated.
        fn (Callable): a function of any arguments that calls the model and returns a scalar (or a tuple whose
            first element is one).

    Returns:
        Callable: ``f(*args, **kwargs) -> (value, grads)``, ``grads`` a tree shaped like
        ``model.trainable_parameters()``.
    """

    def inner(params, *args, **kwargs):
        model.update(params)
        return fn(*args, **kwargs)

    value_grad = mx.value_and_grad(inner)

    @wraps(fn)
    def wrapped(*args, **kwargs):
        return value_grad(model.trainable_parameters(), *args, **kwargs)

    return wrapped


def checkpoint(module, fn: Callable | None = None):
    """Transform ``fn`` (default: the module's call) so that the backward pass recomputes its intermediates
    (``mx.checkpoint``) instead of keeping them, with gradients for the module's trainable parameters too.

    Args:
        module (Module): the module whose trainable parameters the function uses.
        fn (Callable, optional): the function; default ``module.__call__``.

    Returns:
        Callable: the checkpointed function (positional arguments only).
    """
    fn = module.__call__ if fn is None else fn

    def inner(params, *args):
        module.update(params)
        return fn(*args)

    checkpointed = mx.checkpoint(inner)

    @wraps(fn)
    def wrapped(*args):
        return checkpointed(module.trainable_parameters(), *args)

    return wrapped
