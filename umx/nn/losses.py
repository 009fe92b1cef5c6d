"""Loss functions, as MLX's ``mlx.nn.losses``. Each takes ``reduction``: ``'none'`` (per element or sample),
``'mean'`` or ``'sum'``."""

from __future__ import annotations

import math
from typing import Literal

import umx as mx

Reduction = Literal["none", "mean", "sum"]


def _reduce(loss: mx.array, reduction: Reduction = "none") -> mx.array:
    if reduction == "mean":
        return mx.mean(loss)
    if reduction == "sum":
        return mx.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError("Invalid reduction. Must be 'none', 'mean', or 'sum'.")


def _same_shape(name: str, a: mx.array, b: mx.array, what: str = "inputs", other: str = "targets") -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: {what} shape {a.shape} does not match {other} shape {b.shape}.")


def cross_entropy(logits: mx.array, targets: mx.array, weights: mx.array | None = None, axis: int = -1,
                  label_smoothing: float = 0.0, reduction: Reduction = "none") -> mx.array:
    r"""The cross entropy :math:`\log \sum_j e^{z_j} - \sum_j t_j z_j` of ``logits`` :math:`z`.

    Args:
        logits (array): the unnormalized logits.
        targets (array): class indices (``logits``'s shape without ``axis``), or probabilities (the shape of
            ``logits``).
        weights (array, optional): a weight per loss (the shape of the unreduced loss).
        axis (int): the class axis. Default: ``-1``.
        label_smoothing (float): in ``[0, 1)``; mixes the targets with the uniform distribution. Default: ``0``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the loss.

    Example:
        >>> cross_entropy(mx.array([[2.0, -1.0], [-1.0, 2.0]]), mx.array([0, 1]))
        array([0.0485873, 0.0485873], dtype=float32)
    """
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"Label smoothing must in [0, 1), got {label_smoothing}.")
    as_probs = targets.ndim == logits.ndim
    expected = logits.shape if as_probs else tuple(n for i, n in enumerate(logits.shape)
                                                   if i != axis % logits.ndim)
    if targets.shape != expected:
        raise ValueError(f"Targets shape {targets.shape} does not match logits shape {logits.shape}.")
    # shifted by the largest logit, so that the loss depends on the gaps between logits only and a large
    # common offset costs no precision
    shifted = logits - mx.stop_gradient(mx.max(logits, axis=axis, keepdims=True))
    if as_probs:
        score = mx.sum(shifted * targets, axis=axis)
    else:
        score = mx.take_along_axis(shifted, mx.expand_dims(targets, axis), axis=axis).squeeze(axis)
    loss = mx.logsumexp(shifted, axis=axis)
    if label_smoothing > 0:
        loss = loss - (1 - label_smoothing) * score - label_smoothing * mx.mean(shifted, axis=axis)
    else:
        loss = loss - score
    if weights is not None:
        _same_shape("cross_entropy", weights, loss, "weights", "loss")
        loss = loss * weights
    return _reduce(loss, reduction)


def binary_cross_entropy(inputs: mx.array, targets: mx.array, weights: mx.array | None = None,
                         with_logits: bool = True, reduction: Reduction = "mean") -> mx.array:
    r"""The binary cross entropy :math:`-t \log p - (1 - t) \log(1 - p)`.

    Args:
        inputs (array): logits (with ``with_logits``) or probabilities :math:`p`.
        targets (array): the binary targets :math:`t` in {0, 1}.
        weights (array, optional): a weight per loss (the inputs' shape).
        with_logits (bool): ``inputs`` are logits (faster and more precise). Without it, the logarithms are
            clipped below at ``-100``. Default: ``True``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'mean'``.

    Returns:
        array: the loss.
    """
    _same_shape("binary_cross_entropy", inputs, targets)
    if with_logits:
        loss = mx.logaddexp(0.0, inputs) - inputs * targets
    else:
        log_p = mx.clip(mx.log(inputs), -100, None)
        log_not_p = mx.clip(mx.log(1 - inputs), -100, None)
        loss = -(targets * log_p + (1 - targets) * log_not_p)
    if weights is not None:
        _same_shape("binary_cross_entropy", weights, loss, "weights", "loss")
        loss = loss * weights
    return _reduce(loss, reduction)


def l1_loss(predictions: mx.array, targets: mx.array, reduction: Reduction = "mean") -> mx.array:
    """The mean absolute error :math:`|p - t|`.

    Args:
        predictions (array): the predictions.
        targets (array): the targets (same shape).
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'mean'``.

    Returns:
        array: the loss.
    """
    _same_shape("l1_loss", predictions, targets, "predictions")
    return _reduce(mx.abs(predictions - targets), reduction)


def mse_loss(predictions: mx.array, targets: mx.array, reduction: Reduction = "mean") -> mx.array:
    """The mean squared error :math:`(p - t)^2`.

    Args:
        predictions (array): the predictions.
        targets (array): the targets (same shape).
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'mean'``.

    Returns:
        array: the loss.
    """
    _same_shape("mse_loss", predictions, targets, "predictions")
    return _reduce(mx.square(predictions - targets), reduction)


def nll_loss(inputs: mx.array, targets: mx.array, axis: int = -1, reduction: Reduction = "none") -> mx.array:
    """The negative log likelihood ``-inputs[target]`` of log probabilities.

    Args:
        inputs (array): log probabilities.
        targets (array): class indices (``inputs``'s shape without ``axis``).
        axis (int): the class axis. Default: ``-1``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the loss.
    """
    loss = -mx.take_along_axis(inputs, mx.expand_dims(targets, axis), axis=axis).squeeze(axis)
    return _reduce(loss, reduction)


def gaussian_nll_loss(inputs: mx.array, targets: mx.array, vars: mx.array, full: bool = False, eps: float = 1e-6,
                      reduction: Reduction = "mean") -> mx.array:
    r"""The negative log likelihood of ``targets`` under Gaussians of means ``inputs`` and variances ``vars``:
    :math:`\frac12 (\log \max(v, \epsilon) + (x - t)^2 / \max(v, \epsilon))`, plus :math:`\frac12 \log 2\pi`
    with ``full``.

    Args:
        inputs (array): the predicted means.
        targets (array): the samples.
        vars (array): the predicted variances.
        full (bool): add the constant term. Default: ``False``.
        eps (float): the smallest variance used. Default: ``1e-6``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'mean'``.

    Returns:
        array: the loss.
    """
    _same_shape("gaussian_nll_loss", inputs, targets)
    _same_shape("gaussian_nll_loss", inputs, vars, "inputs", "vars")
    vars = mx.maximum(vars, eps)
    loss = 0.5 * (mx.log(vars) + mx.square(targets - inputs) / vars)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


def kl_div_loss(inputs: mx.array, targets: mx.array, axis: int = -1, reduction: Reduction = "none") -> mx.array:
    """The Kullback-Leibler divergence ``sum(exp(targets) * (targets - inputs), axis)`` of log probabilities.

    Args:
        inputs (array): the predicted log probabilities.
        targets (array): the target log probabilities.
        axis (int): the distribution axis. Default: ``-1``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the loss.
    """
    return _reduce(mx.sum(mx.exp(targets) * (targets - inputs), axis=axis), reduction)


def smooth_l1_loss(predictions: mx.array, targets: mx.array, beta: float = 1.0,
                   reduction: Reduction = "mean") -> mx.array:
    r"""The smooth L1 loss: :math:`0.5 d^2 / \beta` where :math:`d = |p - t| < \beta`, else :math:`d - 0.5\beta`.

    Args:
        predictions (array): the predictions.
        targets (array): the targets (same shape).
        beta (float): where the loss turns from squared to absolute. Default: ``1.0``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'mean'``.

    Returns:
        array: the loss.
    """
    _same_shape("smooth_l1_loss", predictions, targets, "predictions")
    diff = mx.abs(predictions - targets)
    return _reduce(mx.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta), reduction)


def triplet_loss(anchors: mx.array, positives: mx.array, negatives: mx.array, axis: int = -1, p: int = 2,
                 margin: float = 1.0, eps: float = 1e-6, reduction: Reduction = "none") -> mx.array:
    r"""The triplet loss :math:`\max(\|a - p\|_p - \|a - n\|_p + \text{margin}, 0)`.

    Args:
        anchors (array): the anchors.
        positives (array): samples that should be near the anchors.
        negatives (array): samples that should be far from the anchors.
        axis (int): the feature axis. Default: ``-1``.
        p (int): the norm's degree. Default: ``2``.
        margin (float): the margin. Default: ``1.0``.
        eps (float): added to the sum of powers before the root. Default: ``1e-6``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the loss, the inputs' shape without ``axis`` for ``'none'``.
    """

    def distance(a, b):
        return mx.power(mx.sum(mx.power(mx.abs(a - b), p), axis=axis) + eps, 1 / p)

    loss = mx.maximum(distance(anchors, positives) - distance(anchors, negatives) + margin, 0)
    return _reduce(loss, reduction)


def hinge_loss(inputs: mx.array, targets: mx.array, reduction: Reduction = "none") -> mx.array:
    r"""The hinge loss :math:`\max(0, 1 - t\,x)` for targets in {-1, 1}.

    Args:
        inputs (array): the predictions.
        targets (array): the targets, -1 or 1.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the loss.
    """
    return _reduce(mx.maximum(1 - inputs * targets, 0), reduction)


def huber_loss(inputs: mx.array, targets: mx.array, delta: float = 1.0, reduction: Reduction = "none") -> mx.array:
    r"""The Huber loss: :math:`\frac12 a^2` for :math:`|a| \le \delta`, else :math:`\delta (|a| - \frac12\delta)`,
    with :math:`a` = ``inputs - targets``.

    Args:
        inputs (array): the predictions.
        targets (array): the targets.
        delta (float): where the loss turns from squared to linear. Default: ``1.0``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the loss.
    """
    errors = mx.abs(inputs - targets)
    quadratic = mx.minimum(errors, delta)
    return _reduce(0.5 * quadratic**2 + delta * (errors - quadratic), reduction)


def log_cosh_loss(inputs: mx.array, targets: mx.array, reduction: Reduction = "none") -> mx.array:
    r"""The log-cosh loss :math:`\log \cosh(x - t)` (squared for small errors, absolute for large ones).

    Args:
        inputs (array): the predictions.
        targets (array): the targets.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the loss.
    """
    errors = inputs - targets
    # log(cosh(e)) = log(e^e + e^-e) - log 2, without overflow for large errors
    return _reduce(mx.logaddexp(errors, -errors) - math.log(2), reduction)


def cosine_similarity_loss(x1: mx.array, x2: mx.array, axis: int = 1, eps: float = 1e-8,
                           reduction: Reduction = "none") -> mx.array:
    r"""The cosine similarity :math:`x_1 \cdot x_2 / \max(\|x_1\| \|x_2\|, \epsilon)` along ``axis``.

    Args:
        x1 (array): the first inputs.
        x2 (array): the second inputs.
        axis (int): the embedding axis. Default: ``1``.
        eps (float): the smallest denominator. Default: ``1e-8``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the similarity.
    """
    norms = mx.linalg.norm(x1, axis=axis) * mx.linalg.norm(x2, axis=axis)
    return _reduce(mx.sum(x1 * x2, axis=axis) / mx.maximum(norms, eps), reduction)


def margin_ranking_loss(inputs1: mx.array, inputs2: mx.array, targets: mx.array, margin: float = 0.0,
                        reduction: Reduction = "none") -> mx.array:
    r"""The margin ranking loss :math:`\max(0, -y (x_1 - x_2) + \text{margin})`, for labels :math:`y` of 1
    (``inputs1`` should rank higher) or -1.

    Args:
        inputs1 (array): the first scores.
        inputs2 (array): the second scores.
        targets (array): the labels, 1 or -1.
        margin (float): the margin. Default: ``0.0``.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default: ``'none'``.

    Returns:
        array: the loss.
    """
    if not inputs1.shape == inputs2.shape == targets.shape:
        raise ValueError(f"margin_ranking_loss: inputs1 {inputs1.shape}, inputs2 {inputs2.shape} and targets "
                         f"{targets.shape} must have the same shape.")
    return _reduce(mx.maximum(0, -targets * (inputs1 - inputs2) + margin), reduction)
