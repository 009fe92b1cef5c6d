"""Learning rate schedules: functions of the optimizer's step count that give the value for that step.

A schedule is called with the step as a ``uint64`` array (inside the optimizer) or a Python int (by hand), and
returns the value for that step: an array when the step is an array, so that a compiled training step computes it
as part of its graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import umx as mx

__all__ = ["exponential_decay", "step_decay", "cosine_decay", "linear_schedule", "join_schedules"]


def exponential_decay(init: float, decay_rate: float) -> Callable:
    r"""Make an exponential decay schedule: :math:`\text{init} \cdot \text{decay\_rate}^{\,t}` at step :math:`t`.

    Args:
        init (float): the value at step 0.
        decay_rate (float): the factor applied at every step.

    Returns:
        Callable: the schedule.

    Example:
        >>> lr_schedule = optim.exponential_decay(1e-1, 0.9)
        >>> lr_schedule(2)
        0.081
    """

    def schedule(step):
        return init * decay_rate**step

    return schedule


def step_decay(init: float, decay_rate: float, step_size: int) -> Callable:
    r"""Make a step decay schedule: the value is multiplied by ``decay_rate`` every ``step_size`` steps,
    :math:`\text{init} \cdot \text{decay\_rate}^{\lfloor t / \text{step\_size} \rfloor}`.

    Args:
        init (float): the value at step 0.
        decay_rate (float): the factor applied every ``step_size`` steps.
        step_size (int): how many steps each value lasts (at least 1).

    Returns:
        Callable: the schedule.

    Example:
        >>> lr_schedule = optim.step_decay(1e-1, 0.9, 10)
        >>> lr_schedule(25)
        0.081
    """
    if step_size < 1:
        raise ValueError(f"step_decay: step_size must be greater than 0, but got {step_size}.")

    def schedule(step):
        return init * decay_rate ** (step // step_size)

    return schedule


def cosine_decay(init: float, decay_steps: int, end: float = 0.0) -> Callable:
    r"""Make a cosine decay schedule from ``init`` to ``end`` over ``decay_steps`` steps,
    :math:`\text{end} + \tfrac12 (1 + \cos(\pi \min(t, T) / T)) (\text{init} - \text{end})`, and ``end`` from
    then on.

    Args:
        init (float): the value at step 0.
        decay_steps (int): the number of steps :math:`T` to decay over (at least 1).
        end (float, optional): the final value. Default: ``0``.

    Returns:
        Callable: the schedule.

    Example:
        >>> lr_schedule = optim.cosine_decay(1e-1, 1000)
        >>> optimizer = optim.SGD(learning_rate=lr_schedule)
        >>> for _ in range(5): optimizer.update({}, {})
        >>> optimizer.learning_rate
        array(0.0999961, dtype=float32)
    """
    if decay_steps < 1:
        raise ValueError(f"cosine_decay: decay_steps must be greater than 0, but got {decay_steps}.")

    def schedule(step):
        done = mx.minimum(step, decay_steps)
        decay = 0.5 * (1.0 + mx.cos((math.pi / decay_steps) * done))
        return end + decay * (init - end)

    return schedule


def linear_schedule(init: float, end: float, steps: int) -> Callable:
    r"""Make a linear schedule from ``init`` to ``end`` over ``steps`` steps, and ``end`` from then on.

    Args:
        init (float): the value at step 0.
        end (float): the value from step ``steps`` on.
        steps (int): the number of steps to go from ``init`` to ``end`` (at least 1).

    Returns:
        Callable: the schedule.

    Example:
        >>> lr_schedule = optim.linear_schedule(0, 1e-1, 100)
        >>> lr_schedule(50)
        array(0.05, dtype=float32)
    """
    if steps < 1:
        raise ValueError(f"linear_schedule: steps must be greater than 0, but got {steps}.")

    def schedule(step):
        done = mx.minimum(step, steps)
        return done * ((end - init) / steps) + init

    return schedule


def join_schedules(schedules: list[Callable], boundaries: list[int]) -> Callable:
    r"""Join schedules end to end: schedule :math:`i + 1` takes over at ``boundaries[i]``, and is called with
    the number of steps since that boundary.

    Args:
        schedules (list[Callable]): the schedules, in order.
        boundaries (list[int]): the steps where the next schedule takes over, one fewer than ``schedules``.

    Returns:
        Callable: the joined schedule.

    Example:
        >>> warmup = optim.linear_schedule(0, 1e-1, steps=10)
        >>> cosine = optim.cosine_decay(1e-1, 200)
        >>> lr_schedule = optim.join_schedules([warmup, cosine], [10])
        >>> lr_schedule(5)
        array(0.05, dtype=float32)
    """
    if len(schedules) == 0:
        raise ValueError("join_schedules: must provide at least 1 schedule to join.")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(f"join_schedules: received {len(boundaries)} boundaries but expected "
                         f"{len(schedules) - 1}.")
    schedules, boundaries = list(schedules), list(boundaries)

    def schedule(step):
        value = schedules[0](step)
        for boundary, later in zip(boundaries, schedules[1:]):
            value = mx.where(step < boundary, value, later(step - boundary))
        return value

    return schedule
