"""Optimizers as MLX's ``mlx.optimizers`` defines them, written on umx's public API.

An optimizer keeps its state in one dict tree of arrays (``state``): the ``step`` count (a ``uint64`` array), the
hyperparameters that may follow a schedule (``learning_rate``), and one dict per parameter, at the parameter's
place in the model's tree (``state["layers"][0]["weight"]["m"]``). Every update is array ops on that tree, the
step count included, so a training step compiled with ``mx.compile(step, inputs=[model.state, opt.state],
outputs=[...])`` captures and replaces the state like any other arrays, and the state saves and loads with
``tree_flatten`` and ``mx.save_safetensors``.

The optimizers defined here run their update as one compiled call (``mx.compile`` of :meth:`Optimizer.apply_single`
over every parameter, traced once per signature and per value of their settings): an eager training step's update
is then one node, on a GPU one CUDA graph, where it was a dozen ops per parameter to build and plan. A subclass
runs its update as written, as does an optimizer with a setting that is not a constant (an array).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import umx as mx
from umx.utils import tree_flatten, tree_map, tree_merge, tree_reduce, tree_unflatten

__all__ = ["Optimizer", "SGD", "RMSprop", "Adagrad", "AdaDelta", "Adam", "AdamW", "Adamax", "Lion", "Adafactor",
           "Muon", "MultiOptimizer", "clip_grad_norm"]


def _as_array(value) -> mx.array:
    return value if isinstance(value, mx.array) else mx.array(value)


_NOT_CONSTANT = object()


def _frozen(value):
    """``value`` as a hashable key, if it is a constant a compiled update may be traced for (bool, int, float, str,
    None, or lists and tuples of them: lists become tuples, tagged apart from tuples); else ``_NOT_CONSTANT``."""
    if isinstance(value, (list, tuple)):
        items = tuple([_frozen(v) for v in value])
        return _NOT_CONSTANT if _NOT_CONSTANT in items else (type(value), items)
    if isinstance(value, (bool, int, float, str, type(None))):
        return (type(value), value)  # (type first: 1, 1.0 and True set an update apart)
    return _NOT_CONSTANT


def _gather(gradients, parameters, state, grads: list, params: list, slots: list) -> None:
    """Append each leaf of ``gradients`` to ``grads``, and what stands at its place in ``parameters`` and in
    ``state`` (the parameter, its state's dict) to ``params`` and ``slots``: ``tree_map``'s walk, flat (written
    out: tree_map with two more trees and a collecting function costs an LM's update a quarter of a millisecond
    more at every step)."""
    if isinstance(gradients, dict):
        for k, g in gradients.items():
            if type(g) is mx.array:  # (a leaf, taken here: no call for each of a model's weights)
                grads.append(g)
                params.append(parameters[k])
                slots.append(state[k])
            else:
                _gather(g, parameters[k], state[k], grads, params, slots)
    elif isinstance(gradients, (list, tuple)):
        for i, g in enumerate(gradients):
            _gather(g, parameters[i], state[i], grads, params, slots)
    else:
        grads.append(gradients)
        params.append(parameters)
        slots.append(state)


def _rebuild(tree, leaves):
    """``tree``'s structure with the next of ``leaves`` at each leaf (as ``tree_map`` builds it: dicts plain)."""
    if isinstance(tree, dict):
        return {k: next(leaves) if type(v) is mx.array else _rebuild(v, leaves) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rebuild(v, leaves) for v in tree]
    if isinstance(tree, tuple):
        items = [_rebuild(v, leaves) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return next(leaves)


def _empty_slots(tree):
    """``tree``'s structure with an empty dict in place of each leaf: the per-parameter states to fill."""
    return tree_map(lambda _: {}, tree)


def _with_slots(parameters, state):
    """``state`` grown to hold a slot (a dict) for every leaf of ``parameters``; the slots it has are kept.

    A state read back from a file lacks the empty containers of the model (layers without parameters), and
    its lists stop at the last entry that held an array, so it is grown rather than rebuilt.
    """
    if isinstance(parameters, dict):
        if not isinstance(state, dict):
            state = {}
        for key, value in parameters.items():
            state[key] = _with_slots(value, state[key]) if key in state else _empty_slots(value)
        return state
    if isinstance(parameters, (list, tuple)):
        old = list(state) if isinstance(state, (list, tuple)) else []
        return [_with_slots(p, old[i]) if i < len(old) else _empty_slots(p) for i, p in enumerate(parameters)]
    return state if isinstance(state, dict) else {}


class Optimizer:
    """The base class of all optimizers: it applies a per-parameter update (:meth:`apply_single`) to every leaf
    of a tree of parameters, with a per-parameter state (:meth:`init_single`).

    Args:
        schedulers (dict, optional): hyperparameter names mapped to schedules (callables of the step count)
            whose values :meth:`apply_gradients` puts in ``state`` before each update.
    """

    def __init__(self, schedulers: dict | None = None):
        self._initialized = False
        self._state = {"step": mx.array(0, mx.uint64)}
        self._schedulers = dict(schedulers or {})
        self._shared = None  # (step, learning rate, {key: value}): see _per_update
        self._compiled: dict = {}  # apply_gradients's update, compiled, per settings and state layout

    def update(self, model, gradients) -> None:
        """Apply the gradients to the parameters of ``model`` and update the model with the new parameters.

        Args:
            model: the model (``mlx.nn.Module`` or any dict tree with an ``update`` method).
            gradients (dict): a tree of gradients, most likely computed by ``nn.value_and_grad``.
        """
        model.update(self.apply_gradients(gradients, model))

    def init(self, parameters) -> None:
        """Initialize the optimizer's state for ``parameters``.

        Optional: the first :meth:`update` initializes it from the gradients. Call it to see ``state`` before
        the first update, or to grow a loaded state (which lacks the model's parameterless parts) to the model.
        Slots already in ``state`` are kept.

        Args:
            parameters (dict): a tree of parameters.

        Example:
            >>> optimizer = optim.SGD(learning_rate=1e-1, momentum=0.9)
            >>> optimizer.init({"weight": mx.zeros((2, 2)), "bias": mx.zeros((2,))})
            >>> optimizer.state.keys()
            dict_keys(['step', 'learning_rate', 'weight', 'bias'])
        """
        state = self.state
        for key, value in parameters.items():
            state[key] = _with_slots(value, state[key]) if key in state else _empty_slots(value)
        # an empty slot is new; a filled one came from a loaded state and keeps its values
        tree_map(lambda p, s: s or self.init_single(p, s), parameters, state)
        self._initialized = True

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Fill ``state`` with the initial state of one parameter. Overridden by each optimizer.

        Args:
            parameter (array): the parameter.
            state (dict): that parameter's state, empty on entry.
        """
        raise NotImplementedError(f"{type(self).__name__}.init_single")

    def apply_gradients(self, gradients, parameters):
        """Apply the gradients to the parameters and return the updated parameters.

        ``model.update(optimizer.apply_gradients(grads, model))`` is :meth:`update`. The step count advances by
        one and each scheduled hyperparameter takes its schedule's value at the step before.

        Args:
            gradients (dict): a tree of gradients.
            parameters (dict): a tree of parameters with at least the gradients' structure; the result has the
                gradients' structure.

        Returns:
            dict: the tree of updated parameters.
        """
        if not self._initialized:
            self.init(gradients)
        state = self.state
        for name, schedule in self._schedulers.items():
            state[name] = _as_array(schedule(state["step"]))
        settings = self._settings()
        if settings is None:
            state["step"] = state["step"] + 1
            return tree_map(self.apply_single, gradients, parameters, state)
        return self._compiled_update(gradients, parameters, state, settings)

    #: set (in the class's own body) by the optimizers whose update may run compiled: :meth:`apply_single` is a
    #: function of its arrays and of the optimizer's constant attributes only. A subclass of one of them is
    #: updated as written, op by op, unless it sets this too.
    _compiles = False

    def _settings(self):
        """The optimizer's public attributes as a hashable ``((name, value), ...)``, if its update may run compiled
        and each value is a constant (bool, int, float, str, None, or lists and tuples of them); else None (as
        after an update that changed its state's layout)."""
        if not type(self).__dict__.get("_compiles", False) or self._compiled is None:
            return None
        settings = []
        for name, value in self.__dict__.items():
            if name[0] == "_":
                continue
            frozen = _frozen(value)
            if frozen is _NOT_CONSTANT:
                return None  # (an array or an object: the update as written reads it every time)
            settings.append((name, frozen))
        return tuple(settings)

    def _compiled_update(self, gradients, parameters, state: dict, settings: tuple):
        """:meth:`apply_gradients`'s update as one compiled call (``mx.compile``): every parameter's new value
        and state from one trace of :meth:`apply_single` per signature, replayed without its Python, and on a
        GPU one CUDA graph, instead of a dozen ops per parameter built and planned at every step. The settings
        key the trace, so a changed hyperparameter traces again. The new state goes back into ``state``'s own
        dicts, which a compiled training step may name in its ``inputs`` and ``outputs``."""
        grads: list = []
        params: list = []
        slots: list = []
        _gather(gradients, parameters, state, grads, params, slots)
        names = tuple([k for k, v in state.items() if isinstance(v, mx.array)])  # step, learning rate, ...
        layout = tuple([tuple(slot) for slot in slots])
        key = (settings, names, layout)
        entry = self._compiled.get(key)  # (compile keys the shapes and dtypes)
        if entry is None:
            if len(self._compiled) >= 8:
                self._compiled.clear()
            traced: dict = {}
            entry = self._compiled[key] = (mx.compile(functools.partial(self._update, names, layout, traced)), traced)
        flat = entry[0](*grads, *params, *[v for slot in slots for v in slot.values()], *[state[k] for k in names])
        traced = entry[1]
        if traced["layout"] != list(layout):
            self._compiled = None  # an update that adds or drops state entries runs as written from now on
        n = len(grads)
        at = n
        for slot, keys in zip(slots, traced["layout"]):
            for k in keys:
                slot[k] = flat[at]
                at += 1
        for k in names:
            state[k] = flat[at]
            at += 1
        return _rebuild(gradients, iter(flat[:n]))

    def _update(self, names: tuple, layout: tuple, traced: dict, *arrays):
        """The update :meth:`_compiled_update` traces, over flat arrays: the gradients, the parameters, the values
        of each parameter's state (its keys in ``layout``) and the shared values ``names`` (the step count, the
        learning rate), standing in for the state's own. Returns the new parameters, then each state's values
        (their keys put in ``traced``), then the shared values, the step count advanced."""
        n = len(layout)
        grads, params = arrays[:n], arrays[n:2 * n]
        at = 2 * n
        slots = []
        for keys in layout:
            slots.append(dict(zip(keys, arrays[at:at + len(keys)])))
            at += len(keys)
        shared = dict(zip(names, arrays[at:]))
        outer = self._state
        self._state = shared
        try:
            shared["step"] = shared["step"] + 1
            updated = [self.apply_single(g, p, slot) for g, p, slot in zip(grads, params, slots)]
        finally:
            self._state = outer
            self._shared = None  # (values of the trace: a later update computes its own)
        traced["layout"] = [tuple(slot) for slot in slots]
        return [*updated, *[v for slot in slots for v in slot.values()], *[shared[k] for k in names]]

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """Return the updated ``parameter`` and update its ``state`` in place. Overridden by each optimizer.

        Args:
            gradient (array): the parameter's gradient.
            parameter (array): the parameter.
            state (dict): the parameter's state.

        Returns:
            array: the new parameter, of the parameter's dtype.
        """
        raise NotImplementedError(f"{type(self).__name__}.apply_single")

    @property
    def state(self) -> dict:
        """The optimizer's state: a dict tree of arrays (``step``, ``learning_rate``, per-parameter states)."""
        return self._state

    @state.setter
    def state(self, state: dict) -> None:
        self._initialized = False  # the next update grows it to the gradients' tree
        self._state = state

    @property
    def step(self) -> mx.array:
        """The number of updates made so far, a ``uint64`` array."""
        return self.state["step"]

    @property
    def learning_rate(self) -> mx.array:
        """The learning rate, an array (the schedule's value for the latest update, if it follows one)."""
        return self.state["learning_rate"]

    @learning_rate.setter
    def learning_rate(self, learning_rate) -> None:
        self.state["learning_rate"] = mx.array(learning_rate)

    def _per_update(self, key, make: Callable):
        """``make()``, computed once per update and shared by every parameter: values that depend only on the
        step count and the learning rate (bias corrections, decay factors). Each would otherwise be a few tiny
        ops per parameter. Keyed by the identity of the state's current step and learning rate arrays, so a new
        update, a new learning rate or a loaded state computes it again."""
        step, lr = self.state["step"], self.state.get("learning_rate")
        shared = self._shared
        if shared is None or shared[0] is not step or shared[1] is not lr:
            shared = self._shared = (step, lr, {})
        values = shared[2]
        if key not in values:
            values[key] = make()
        return values[key]

    def _maybe_schedule(self, name: str, value) -> None:
        """Put hyperparameter ``name`` in ``state``: ``value``, or, for a callable, its value at the current step,
        recomputed before every update (for optimizers that add scheduled hyperparameters)."""
        if callable(value):
            self._schedulers[name] = value
            value = value(self.step)
        self.state[name] = _as_array(value)


def _check_beta(name: str, which: str, beta: float) -> None:
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"{name} {which} should be in [0, 1), {beta} was provided instead")


def _check_eps(name: str, eps: float) -> None:
    # the accumulators start at zero, so eps == 0 turns a zero gradient into 0 / 0
    if eps <= 0.0:
        raise ValueError(f"{name} epsilon should be >0, {eps} was provided instead")


class SGD(Optimizer):
    r"""The stochastic gradient descent optimizer, with optional momentum, weight decay and Nesterov momentum.

    .. math::

        g_t &\leftarrow g_t + \text{wd} \, w_t \\
        v_{t+1} &= \mu v_t + (1 - \tau) g_t \\
        w_{t+1} &= w_t - \lambda v_{t+1} \quad (\text{Nesterov: } w_t - \lambda (g_t + \mu v_{t+1}))

    Without momentum, :math:`w_{t+1} = w_t - \lambda g_t`.

    Args:
        learning_rate (float or callable): the learning rate :math:`\lambda`.
        momentum (float, optional): the momentum strength :math:`\mu`. Default: ``0``.
        weight_decay (float, optional): the weight decay (L2 penalty) ``wd``. Default: ``0``.
        dampening (float, optional): the dampening of the momentum :math:`\tau`. Default: ``0``.
        nesterov (bool, optional): use Nesterov momentum (needs a momentum and no dampening). Default: ``False``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, momentum: float = 0.0, weight_decay: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening.")
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.dampening = dampening
        self.nesterov = nesterov

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Set the momentum ``v`` to zeros."""
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One SGD step of one parameter."""
        if self.weight_decay != 0:
            gradient = gradient + self.weight_decay * parameter
        lr = self.learning_rate.astype(gradient.dtype)
        if self.momentum <= 0:
            return parameter - lr * gradient
        v = self.momentum * state["v"]
        v = v + ((1 - self.dampening) * gradient if self.dampening > 0 else gradient)
        state["v"] = v
        step = gradient + self.momentum * v if self.nesterov else v
        return parameter - lr * step


class RMSprop(Optimizer):
    r"""The RMSprop optimizer (Tieleman and Hinton, 2012, Lecture 6.5 of "Neural networks for machine learning").

    .. math::

        v_{t+1} &= \alpha v_t + (1 - \alpha) g_t^2 \\
        w_{t+1} &= w_t - \lambda \frac{g_t}{\sqrt{v_{t+1}} + \epsilon}

    Args:
        learning_rate (float or callable): the learning rate :math:`\lambda`.
        alpha (float, optional): the smoothing constant :math:`\alpha`. Default: ``0.99``.
        eps (float, optional): :math:`\epsilon`, added to the denominator (must be positive). Default: ``1e-8``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, alpha: float = 0.99, eps: float = 1e-8):
        if alpha < 0.0:
            raise ValueError(f"RMSprop alpha should be >=0, {alpha} was provided instead")
        _check_eps("RMSprop", eps)
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.alpha = alpha
        self.eps = eps

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Set the running mean of squared gradients ``v`` to zeros."""
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One RMSprop step of one parameter."""
        lr = self.learning_rate.astype(gradient.dtype)
        v = self.alpha * state["v"] + (1 - self.alpha) * mx.square(gradient)
        state["v"] = v
        return parameter - lr * gradient / (mx.sqrt(v) + self.eps)


class Adagrad(Optimizer):
    r"""The Adagrad optimizer (Duchi, Hazan and Singer, 2011, "Adaptive subgradient methods for online learning
    and stochastic optimization").

    .. math::

        v_{t+1} &= v_t + g_t^2 \\
        w_{t+1} &= w_t - \lambda \frac{g_t}{\sqrt{v_{t+1}} + \epsilon}

    Args:
        learning_rate (float or callable): the learning rate :math:`\lambda`.
        eps (float, optional): :math:`\epsilon`, added to the denominator (must be positive). Default: ``1e-8``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, eps: float = 1e-8):
        _check_eps("Adagrad", eps)
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.eps = eps

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Set the sum of squared gradients ``v`` to zeros."""
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One Adagrad step of one parameter."""
        lr = self.learning_rate.astype(gradient.dtype)
        v = state["v"] + mx.square(gradient)
        state["v"] = v
        return parameter - lr * gradient / (mx.sqrt(v) + self.eps)


class AdaDelta(Optimizer):
    r"""The AdaDelta optimizer with a learning rate (Zeiler, 2012, "ADADELTA: an adaptive learning rate method").

    .. math::

        v_{t+1} &= \rho v_t + (1 - \rho) g_t^2 \\
        \Delta w_{t+1} &= \frac{\sqrt{u_t + \epsilon}}{\sqrt{v_{t+1} + \epsilon}} g_t \\
        u_{t+1} &= \rho u_t + (1 - \rho) \Delta w_{t+1}^2 \\
        w_{t+1} &= w_t - \lambda \Delta w_{t+1}

    Args:
        learning_rate (float or callable): the learning rate :math:`\lambda`.
        rho (float, optional): the decay :math:`\rho` of both running averages. Default: ``0.9``.
        eps (float, optional): :math:`\epsilon`, added under both square roots (must be positive).
            Default: ``1e-6``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, rho: float = 0.9, eps: float = 1e-6):
        if rho < 0.0:
            raise ValueError(f"AdaDelta rho should be >=0, {rho} was provided instead")
        _check_eps("AdaDelta", eps)
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.rho = rho
        self.eps = eps

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Set the running averages of squared gradients ``v`` and of squared updates ``u`` to zeros."""
        state["v"] = mx.zeros_like(parameter)
        state["u"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One AdaDelta step of one parameter."""
        lr = self.learning_rate.astype(gradient.dtype)
        rho, eps = self.rho, self.eps
        v = rho * state["v"] + (1 - rho) * mx.square(gradient)
        delta = mx.sqrt(state["u"] + eps) / mx.sqrt(v + eps) * gradient
        state["u"] = rho * state["u"] + (1 - rho) * mx.square(delta)
        state["v"] = v
        return parameter - lr * delta


class Adam(Optimizer):
    r"""The Adam optimizer (Kingma and Ba, 2015, "Adam: A method for stochastic optimization").

    .. math::

        m_{t+1} &= \beta_1 m_t + (1 - \beta_1) g_t \\
        v_{t+1} &= \beta_2 v_t + (1 - \beta_2) g_t^2 \\
        w_{t+1} &= w_t - \lambda \frac{m_{t+1}}{\sqrt{v_{t+1}} + \epsilon}

    With ``bias_correction``, :math:`m_{t+1}` is divided by :math:`1 - \beta_1^{t+1}` and :math:`v_{t+1}` by
    :math:`1 - \beta_2^{t+1}` (:math:`t + 1` the step count) before the update.

    Args:
        learning_rate (float or callable): the learning rate :math:`\lambda`.
        betas (tuple[float, float], optional): :math:`(\beta_1, \beta_2)`, the decays of the running averages of
            the gradient and its square, each in [0, 1). Default: ``(0.9, 0.999)``.
        eps (float, optional): :math:`\epsilon`, added to the denominator. Default: ``1e-8``.
        bias_correction (bool, optional): apply the bias correction. Default: ``False``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, betas: list[float] = [0.9, 0.999],  # noqa: B006 (MLX)
                 eps: float = 1e-8, bias_correction: bool = False):
        name = type(self).__name__
        _check_beta(name, "beta1", betas[0])
        _check_beta(name, "beta2", betas[1])
        if eps < 0.0:
            raise ValueError(f"{name} epsilon should be >=0, {eps} was provided instead")
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = betas
        self.eps = eps
        self.bias_correction = bias_correction

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Set the running averages ``m`` (gradient) and ``v`` (squared gradient) to zeros."""
        state["m"] = mx.zeros_like(parameter)
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One Adam step of one parameter."""
        b1, b2 = self.betas
        m = b1 * state["m"] + (1 - b1) * gradient
        v = b2 * state["v"] + (1 - b2) * mx.square(gradient)
        state["m"] = m
        state["v"] = v
        if not self.bias_correction:
            return parameter - self.learning_rate.astype(gradient.dtype) * m / (mx.sqrt(v) + self.eps)
        m_scale, v_scale = self._per_update(("bias_correction", gradient.dtype), lambda: (
            (self.learning_rate / (1 - b1**self.step)).astype(gradient.dtype),
            mx.rsqrt(1 - b2**self.step).astype(gradient.dtype)))
        return parameter - m_scale * m / (mx.sqrt(v) * v_scale + self.eps)


class AdamW(Adam):
    r"""The AdamW optimizer: Adam with decoupled weight decay (Loshchilov and Hutter, 2019, "Decoupled weight
    decay regularization").

    .. math::

        m_{t+1} &= \beta_1 m_t + (1 - \beta_1) g_t \\
        v_{t+1} &= \beta_2 v_t + (1 - \beta_2) g_t^2 \\
        w_{t+1} &= w_t - \alpha \left(\frac{m_{t+1}}{\sqrt{v_{t+1}} + \epsilon} + \lambda w_t\right)

    Args:
        learning_rate (float or callable): the learning rate :math:`\alpha`.
        betas (tuple[float, float], optional): :math:`(\beta_1, \beta_2)`. Default: ``(0.9, 0.999)``.
        eps (float, optional): :math:`\epsilon`, added to the denominator. Default: ``1e-8``.
        weight_decay (float, optional): the weight decay :math:`\lambda`. Default: ``0.01``.
        bias_correction (bool, optional): apply Adam's bias correction. Default: ``False``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, betas: list[float] = [0.9, 0.999],  # noqa: B006 (MLX)
                 eps: float = 1e-8, weight_decay: float = 0.01, bias_correction: bool = False):
        super().__init__(learning_rate=learning_rate, betas=betas, eps=eps, bias_correction=bias_correction)
        self.weight_decay = weight_decay

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One AdamW step of one parameter: the decay, then Adam's step."""
        kept = self._per_update(("decay", gradient.dtype),
                                lambda: 1 - self.learning_rate.astype(gradient.dtype) * self.weight_decay)
        return super().apply_single(gradient, parameter * kept, state)


class Adamax(Adam):
    r"""The Adamax optimizer, Adam with the infinity norm (Kingma and Ba, 2015), without bias correction.

    .. math::

        m_{t+1} &= \beta_1 m_t + (1 - \beta_1) g_t \\
        v_{t+1} &= \max(\beta_2 v_t, |g_t|) \\
        w_{t+1} &= w_t - \lambda \frac{m_{t+1}}{v_{t+1} + \epsilon}

    Args:
        learning_rate (float or callable): the learning rate :math:`\lambda`.
        betas (tuple[float, float], optional): :math:`(\beta_1, \beta_2)`, the decays of the running average of
            the gradient and of the infinity norm. Default: ``(0.9, 0.999)``.
        eps (float, optional): :math:`\epsilon`, added to the denominator. Default: ``1e-8``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, betas: list[float] = [0.9, 0.999],  # noqa: B006 (MLX)
                 eps: float = 1e-8):
        super().__init__(learning_rate, betas, eps)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One Adamax step of one parameter."""
        lr = self.learning_rate.astype(gradient.dtype)
        b1, b2 = self.betas
        m = b1 * state["m"] + (1 - b1) * gradient
        v = mx.maximum(b2 * state["v"], mx.abs(gradient))
        state["m"] = m
        state["v"] = v
        return parameter - lr * m / (v + self.eps)


class Lion(Optimizer):
    r"""The Lion optimizer (Chen et al., 2023, "Symbolic discovery of optimization algorithms").

    Its updates are signs, so they have a larger norm than SGD's or Adam's: a learning rate 3-10x smaller and
    a weight decay 3-10x larger than AdamW's keep their product.

    .. math::

        c_{t+1} &= \beta_1 m_t + (1 - \beta_1) g_t \\
        m_{t+1} &= \beta_2 m_t + (1 - \beta_2) g_t \\
        w_{t+1} &= w_t - \eta (\text{sign}(c_{t+1}) + \lambda w_t)

    Args:
        learning_rate (float or callable): the learning rate :math:`\eta`.
        betas (tuple[float, float], optional): :math:`(\beta_1, \beta_2)`, the decays of the update direction
            and of the momentum. Default: ``(0.9, 0.99)``.
        weight_decay (float, optional): the weight decay :math:`\lambda`. Default: ``0``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, betas: list[float] = [0.9, 0.99],  # noqa: B006 (MLX)
                 weight_decay: float = 0.0):
        _check_beta("Lion", "beta1", betas[0])
        _check_beta("Lion", "beta2", betas[1])
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = betas
        self.weight_decay = weight_decay

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Set the momentum ``m`` to zeros."""
        state["m"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One Lion step of one parameter."""
        lr = self.learning_rate.astype(gradient.dtype)
        b1, b2 = self.betas
        m = state["m"]
        direction = b1 * m + (1 - b1) * gradient
        state["m"] = b2 * m + (1 - b2) * gradient
        if self.weight_decay > 0:
            parameter = self._per_update(("decay", gradient.dtype), lambda: 1 - lr * self.weight_decay) * parameter
        return parameter - lr * mx.sign(direction)


class Adafactor(Optimizer):
    r"""The Adafactor optimizer (Shazeer and Stern, 2018, "Adafactor: Adaptive learning rates with sublinear
    memory cost").

    The second moment of a parameter of 2 or more dimensions is kept factored, as its means over the last axis
    and over the axis before (per leading index); smaller parameters keep it whole.

    Args:
        learning_rate (float or callable, optional): the learning rate, used only when ``relative_step`` is
            False. Default: ``None``.
        eps (tuple[float, float], optional): :math:`\epsilon_1`, added to the squared gradients, and
            :math:`\epsilon_2`, the least parameter scale. Default: ``(1e-30, 1e-3)``.
        clip_threshold (float, optional): the RMS at which the unscaled update is clipped. Default: ``1.0``.
        decay_rate (float, optional): the exponent of the step in the decay of the second moment,
            :math:`\beta_2 = 1 - t^{\text{decay\_rate}}`. Default: ``-0.8``.
        beta_1 (float, optional): if given, the decay of a first moment of the updates. Default: ``None``.
        weight_decay (float, optional): the weight decay :math:`\lambda`. Default: ``0``.
        scale_parameter (bool, optional): scale the step size by :math:`\max(\epsilon_2, \text{RMS}(w))`.
            Default: ``True``.
        relative_step (bool, optional): ignore ``learning_rate`` and use :math:`\min(10^{-2}, 1/\sqrt{t})`.
            Default: ``True``.
        warmup_init (bool, optional): with ``relative_step``, use :math:`\min(10^{-6} t, 1/\sqrt{t})`.
            Default: ``False``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable | None = None, eps: tuple[float, float] = (1e-30, 1e-3),
                 clip_threshold: float = 1.0, decay_rate: float = -0.8, beta_1: float | None = None,
                 weight_decay: float = 0.0, scale_parameter: bool = True, relative_step: bool = True,
                 warmup_init: bool = False):
        super().__init__()
        if learning_rate is not None:
            self._maybe_schedule("learning_rate", learning_rate)
        self.eps = eps
        self.clip_threshold = clip_threshold
        self.decay_rate = decay_rate
        self.beta_1 = beta_1
        self.weight_decay = weight_decay
        self.scale_parameter = scale_parameter
        self.relative_step = relative_step
        self.warmup_init = warmup_init

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Set the second moment (factored as ``exp_avg_sq_row`` and ``exp_avg_sq_col`` for 2 or more
        dimensions, else ``exp_avg_sq``) and the first moment ``exp_avg`` (with ``beta_1``) to zeros."""
        if parameter.ndim >= 2:
            shape = parameter.shape
            state["exp_avg_sq_row"] = mx.zeros(shape[:-1], parameter.dtype)
            state["exp_avg_sq_col"] = mx.zeros(shape[:-2] + shape[-1:], parameter.dtype)
        else:
            state["exp_avg_sq"] = mx.zeros_like(parameter)
        if self.beta_1 is not None:
            state["exp_avg"] = mx.zeros_like(parameter)

    def _compute_rms(self, x: mx.array) -> mx.array:
        return mx.sqrt(mx.mean(mx.square(x)))

    def _compute_learning_rate(self, step: mx.array, parameter_rms: mx.array) -> mx.array:
        def size() -> mx.array:
            if self.relative_step:
                ceiling = 1e-6 * step if self.warmup_init else 1e-2
                return mx.minimum(ceiling, mx.rsqrt(step)).astype(parameter_rms.dtype)
            return self.learning_rate.astype(parameter_rms.dtype)

        step_size = self._per_update(("step_size", parameter_rms.dtype), size) if step is self.step else size()
        if self.scale_parameter:
            return mx.maximum(self.eps[1], parameter_rms) * step_size
        return step_size

    def _approximate_exp_moving_avg(self, exp_avg_sq_row: mx.array, exp_avg_sq_col: mx.array) -> mx.array:
        """The inverse square root of the second moment rebuilt from its factors, per leading index:
        ``r[..., :, None] * c[..., None, :]`` with ``r = rsqrt(row / mean(row))`` and ``c = rsqrt(col)``."""
        row_factor = mx.rsqrt(exp_avg_sq_row / mx.mean(exp_avg_sq_row, axis=-1, keepdims=True))
        col_factor = mx.rsqrt(exp_avg_sq_col)
        return mx.expand_dims(row_factor, -1) * mx.expand_dims(col_factor, -2)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One Adafactor step of one parameter."""
        step = self.step
        lr = self._compute_learning_rate(step, self._compute_rms(parameter))
        beta_2 = self._per_update(("beta_2", lr.dtype), lambda: 1.0 - (step**self.decay_rate).astype(lr.dtype))
        squared = mx.square(gradient) + self.eps[0]
        if gradient.ndim >= 2:
            row = beta_2 * state["exp_avg_sq_row"] + (1 - beta_2) * mx.mean(squared, axis=-1)
            col = beta_2 * state["exp_avg_sq_col"] + (1 - beta_2) * mx.mean(squared, axis=-2)
            state["exp_avg_sq_row"] = row
            state["exp_avg_sq_col"] = col
            update = self._approximate_exp_moving_avg(row, col) * gradient
        else:
            second = beta_2 * state["exp_avg_sq"] + (1 - beta_2) * squared
            state["exp_avg_sq"] = second
            update = mx.rsqrt(second) * gradient
        update = update / mx.maximum(1.0, self._compute_rms(update) / self.clip_threshold)
        update = lr * update
        if self.beta_1 is not None:
            update = self.beta_1 * state["exp_avg"] + (1 - self.beta_1) * update
            state["exp_avg"] = update
        if self.weight_decay != 0:
            parameter = parameter + parameter * (-self.weight_decay * lr)
        return parameter - update


class Muon(Optimizer):
    r"""The Muon optimizer (MomentUm Orthogonalized by Newton-Schulz; Jordan, 2024, "Muon: An optimizer for
    hidden layers in neural networks").

    SGD with momentum whose update of a matrix is replaced by the nearest semi-orthogonal matrix, computed by a
    few Newton-Schulz iterations. Parameters of more than 2 dimensions (convolution filters) are treated as
    matrices of their first axis by the rest; 0-d and 1-d parameters get the momentum update as is. Muon may
    suit embeddings, the last layer and 0-d or 1-d parameters less well than :class:`AdamW`
    (:class:`MultiOptimizer` combines them).

    Args:
        learning_rate (float or callable): the learning rate.
        momentum (float, optional): the momentum strength. Default: ``0.95``.
        weight_decay (float, optional): the weight decay (L2 penalty). Default: ``0.01``.
        nesterov (bool, optional): use Nesterov momentum. Default: ``True``.
        ns_steps (int, optional): the number of Newton-Schulz iterations. Default: ``5``.
    """

    _compiles = True

    def __init__(self, learning_rate: float | Callable, momentum: float = 0.95, weight_decay: float = 0.01,
                 nesterov: bool = True, ns_steps: int = 5):
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.ns_steps = ns_steps

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Set the momentum ``v`` to zeros."""
        state["v"] = mx.zeros_like(parameter)

    def _zeropower_via_newtonschulz5(self, X: mx.array, steps: int) -> mx.array:  # noqa: N803 (a matrix)
        """An approximation of the semi-orthogonal factor of the matrix ``X`` (its singular values pushed
        towards 1) by ``steps`` quintic Newton-Schulz iterations."""
        a, b, c = 3.4445, -4.7750, 2.0315
        wide = X.shape[-2] <= X.shape[-1]
        if not wide:  # iterate on the smaller Gram matrix
            X = X.T
        X = X / (mx.linalg.norm(X, keepdims=True) + 1e-7)
        for _ in range(steps):
            gram = X @ X.T
            poly = mx.addmm(b * gram, gram, gram, alpha=c)
            X = mx.addmm(X, poly, X, beta=a)
        return X if wide else X.T

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """One Muon step of one parameter."""
        if self.weight_decay != 0:
            gradient = gradient + self.weight_decay * parameter
        v = self.momentum * state["v"] + (1 - self.momentum) * gradient
        state["v"] = v
        update = gradient * (1 - self.momentum) + v * self.momentum if self.nesterov else v
        lr = self.learning_rate.astype(gradient.dtype)
        if update.ndim >= 2:
            shape = update.shape
            matrix = mx.reshape(update, (shape[0], -1))
            update = mx.reshape(self._zeropower_via_newtonschulz5(matrix, self.ns_steps), shape)
            # MLX scales by the parameter's last two axes, not those of the flattened matrix
            lr = lr * max(1.0, shape[-2] / shape[-1]) ** 0.5
        return parameter - lr * update


class MultiOptimizer(Optimizer):
    """Several optimizers, each for the parameters its filter selects.

    A filter is called with a parameter's path (``"layers.0.weight"``) and the parameter, and returns True if
    its optimizer takes it. Each parameter goes to the first optimizer whose filter accepts it; the last
    optimizer, which has no filter, takes the rest.

    Args:
        optimizers (list[Optimizer]): the optimizers.
        filters (list[Callable[[str, array], bool]]): one filter for each optimizer but the last.

    Example:
        >>> optimizer = optim.MultiOptimizer([optim.Muon(1e-2), optim.AdamW(1e-3)],
        ...                                  [lambda path, w: w.ndim >= 2])
    """

    def __init__(self, optimizers: list[Optimizer], filters: list[Callable] = []):  # noqa: B006 (MLX)
        super().__init__()
        self._state = {}
        if len(filters) != len(optimizers) - 1:
            raise ValueError(f"MultiOptimizer: given {len(filters)} filters but {len(optimizers) - 1} needed.")
        self.optimizers = list(optimizers)
        self.filters = list(filters) + [lambda *args, **kwargs: True]

    def _split_dictionary(self, gradients) -> list:
        """``gradients`` cut into one tree per optimizer, by the filters."""
        if len(self.optimizers) == 1:
            return [gradients]
        parts: list[list] = [[] for _ in self.optimizers]
        for path, gradient in tree_flatten(gradients):
            index = next(i for i, keep in enumerate(self.filters) if keep(path, gradient))
            parts[index].append((path, gradient))
        return [tree_unflatten(part) if part else {} for part in parts]

    def init(self, parameters) -> None:
        """Initialize each optimizer's state for its share of ``parameters``.

        Args:
            parameters (dict): a tree of parameters.
        """
        for optimizer, share in zip(self.optimizers, self._split_dictionary(parameters)):
            optimizer.init(share)

    def apply_gradients(self, gradients, parameters):
        """Apply each optimizer to its share of the gradients and return the updated parameters (the
        gradients' structure).

        Args:
            gradients (dict): a tree of gradients.
            parameters (dict): a tree of parameters with at least the gradients' structure.

        Returns:
            dict: the tree of updated parameters.
        """
        updated: dict = {}
        for optimizer, share in zip(self.optimizers, self._split_dictionary(gradients)):
            updated = tree_merge(updated, optimizer.apply_gradients(share, parameters))
        return updated

    @property
    def state(self) -> dict:
        """``{"states": [each optimizer's state]}``."""
        return {"states": [optimizer.state for optimizer in self.optimizers]}

    @state.setter
    def state(self, state: dict) -> None:
        if "states" not in state or len(state["states"]) != len(self.optimizers):
            raise ValueError(f"MultiOptimizer: the state must be {{'states': [...]}} with one state for each of "
                             f"the {len(self.optimizers)} optimizers.")
        for optimizer, sub in zip(self.optimizers, state["states"]):
            optimizer.state = sub

    @property
    def learning_rate(self) -> mx.array:
        """The first optimizer's learning rate."""
        return self.optimizers[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate) -> None:
        self.optimizers[0].learning_rate = learning_rate


def clip_grad_norm(grads, max_norm: float):
    """Scale the gradients down so that their global norm (over all the leaves) is at most ``max_norm``.

    Gradients whose norm is within ``max_norm`` come back unchanged.

    Args:
        grads (dict): a tree of gradient arrays.
        max_norm (float): the largest global norm allowed (at least 0).

    Returns:
        tuple: the (possibly scaled) gradients and their global norm before clipping, an array.

    Example:
        >>> clipped, norm = clip_grad_norm({"w1": mx.array([2.0, 3.0]), "w2": mx.array([1.0])}, max_norm=2.0)
    """
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm: max_norm should be >=0, {max_norm} was provided instead")
    norm_squared = tree_reduce(lambda total, g: total + mx.sum(mx.square(g)), grads, 0.0)
    total_norm = mx.sqrt(norm_squared)
    scale = mx.minimum(max_norm / (total_norm + 1e-6), 1.0)
    return tree_map(lambda g: g * scale, grads), total_norm
