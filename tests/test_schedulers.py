"""Learning rate schedules: their values against the formulas, on Python ints and on the optimizer's uint64 step,
their use by optimizers (the value for an update is the schedule's at the step before) and in compiled steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

import umx as mx
import umx.optimizers as optim
from tests.conftest import assert_close


def _cosine(init, decay_steps, end, t):
    t = min(t, decay_steps)
    return end + 0.5 * (1 + math.cos(math.pi * t / decay_steps)) * (init - end)


def _linear(init, end, steps, t):
    return init + (end - init) * min(t, steps) / steps


FORMULAS = [
    ("exponential", optim.exponential_decay(0.1, 0.9), lambda t: 0.1 * 0.9**t),
    ("step", optim.step_decay(0.2, 0.5, 3), lambda t: 0.2 * 0.5 ** (t // 3)),
    ("cosine", optim.cosine_decay(0.1, 10), lambda t: _cosine(0.1, 10, 0.0, t)),
    ("cosine_end", optim.cosine_decay(0.1, 10, end=0.02), lambda t: _cosine(0.1, 10, 0.02, t)),
    ("linear", optim.linear_schedule(0.0, 1e-2, 8), lambda t: _linear(0.0, 1e-2, 8, t)),
    ("linear_down", optim.linear_schedule(1.0, 0.5, 4), lambda t: _linear(1.0, 0.5, 4, t)),
    ("joined", optim.join_schedules([optim.linear_schedule(0.0, 0.1, 5), optim.cosine_decay(0.1, 6)], [5]),
     lambda t: _linear(0.0, 0.1, 5, t) if t < 5 else _cosine(0.1, 6, 0.0, t - 5)),
]


@pytest.mark.parametrize("name,schedule,formula", FORMULAS, ids=[f[0] for f in FORMULAS])
def test_values(device, name, schedule, formula):
    with mx.stream(device):
        for t in range(15):
            want = formula(t)
            assert float(np.asarray(schedule(t))) == pytest.approx(want, rel=1e-5, abs=1e-7)
            on_array = schedule(mx.array(t, mx.uint64))
            assert isinstance(on_array, mx.array) and on_array.dtype == mx.float32
            assert_close(on_array, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,schedule,formula", FORMULAS, ids=[f[0] for f in FORMULAS])
def test_optimizer_follows_schedule(device, name, schedule, formula):
    with mx.stream(device):
        opt = optim.SGD(learning_rate=schedule)
        assert_close(opt.learning_rate, formula(0), rtol=1e-5, atol=1e-7)
        params = {"w": mx.zeros((3,))}
        grads = {"w": mx.ones((3,))}
        for t in range(12):
            new = opt.apply_gradients(grads, params)
            assert_close(opt.learning_rate, formula(t), rtol=1e-5, atol=1e-7)
            assert_close(new["w"], np.full(3, -formula(t)), rtol=1e-5, atol=1e-7)


def test_every_optimizer_takes_a_schedule():
    for cls in (optim.SGD, optim.RMSprop, optim.Adagrad, optim.AdaDelta, optim.Adam, optim.AdamW, optim.Adamax,
                optim.Lion, optim.Adafactor, optim.Muon):
        opt = cls(learning_rate=optim.step_decay(1e-1, 0.9, 1))
        params = {"w": mx.ones((5, 5))}
        for t in range(6):
            opt.apply_gradients({"w": mx.ones((5, 5))}, params)
            assert_close(opt.learning_rate, 0.1 * 0.9**t, rtol=1e-6)


def test_join_boundaries():
    schedule = optim.join_schedules([lambda _: 3, lambda _: 4, lambda _: 5], [2, 4])
    assert [schedule(t).item() for t in range(8)] == [3, 3, 4, 4, 5, 5, 5, 5]
    later = optim.join_schedules([optim.linear_schedule(0.0, 1.0, 10), lambda t: 100 + t], [3])
    assert [float(later(t).item()) for t in (2, 3, 7)] == pytest.approx([0.2, 100.0, 104.0])


def test_documented_examples():
    opt = optim.SGD(learning_rate=optim.step_decay(1e-1, 0.9, 10))
    for _ in range(21):
        opt.update({}, {})
    assert_close(opt.learning_rate, 0.081, rtol=1e-6)
    opt = optim.Adam(learning_rate=optim.linear_schedule(0, 1e-1, 100))
    for _ in range(101):
        opt.update({}, {})
    assert_close(opt.learning_rate, 0.1, rtol=1e-6)
    opt = optim.Adam(optim.join_schedules([optim.linear_schedule(0, 1e-1, 10), optim.cosine_decay(1e-1, 200)], [10]))
    for _ in range(12):
        opt.update({}, {})
    assert_close(opt.learning_rate, _cosine(0.1, 200, 0.0, 1), rtol=1e-6)


def test_cosine_reaches_end_exactly():
    schedule = optim.cosine_decay(0.1, 10, 0.05)
    assert schedule(9).item() > 0.05
    assert (schedule(20) == 0.05).item()


def test_argument_checks():
    with pytest.raises(ValueError, match="step_size"):
        optim.step_decay(0.1, 0.9, 0)
    with pytest.raises(ValueError, match="decay_steps"):
        optim.cosine_decay(0.1, 0)
    with pytest.raises(ValueError, match="steps"):
        optim.linear_schedule(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="at least 1"):
        optim.join_schedules([], [])
    with pytest.raises(ValueError, match="boundaries"):
        optim.join_schedules([lambda _: 1, lambda _: 2], [2, 4])


def test_schedule_in_compiled_update(device):
    """The schedule is part of the compiled graph: each replay computes the next value from the step."""
    with mx.stream(device):
        schedule = optim.exponential_decay(1e-1, 0.9)
        opt = optim.SGD(learning_rate=schedule)
        update = mx.compile(lambda: opt.update({}, {}), inputs=opt.state, outputs=opt.state)
        for t in range(5):
            update()
            assert_close(opt.learning_rate, schedule(t), rtol=1e-6)
        assert opt.step.item() == 5
