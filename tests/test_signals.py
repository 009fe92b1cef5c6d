"""Signal handlers that evaluate (a checkpoint saved on SIGTERM, a report on SIGALRM) while the main thread is inside
an eval either complete or raise a clear RuntimeError: never a hang. Each case runs in a child process under a
watchdog, many times, with the signal landing at random points of the eval."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import umx as mx

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("UMX_SIGNAL_ROUNDS", "60"))
WATCHDOG_S = 240

SCRIPT = textwrap.dedent("""
    import os, random, signal, sys, tempfile, threading
    import numpy as np
    from numpy.testing import assert_array_equal
    import umx as mx

    device = mx.gpu if sys.argv[1] == "gpu" else mx.cpu
    how, rounds = sys.argv[2], int(sys.argv[3])
    path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
    rng = random.Random(0)
    ready = mx.array(np.arange(1000, dtype=np.float32))       # evaluated before any signal
    outcomes = {"saved": 0, "refused": 0, "none": 0}
    state = {}

    def handler(signum, frame):
        if state.get("busy"):  # (a second signal while this one is handled: noted, as a real handler would)
            outcomes["none"] += 1
            return
        state["busy"] = True
        try:
            save(signum)
        finally:
            state["busy"] = False

    def save(signum):
        saved = {"ready": ready, "lazy": state["lazy"], "pending": state["pending"]}
        try:
            mx.save_safetensors(path, saved)
        except RuntimeError as e:
            assert "umx:" in str(e), e
            outcomes["refused"] += 1
            return
        back = mx.load(path)
        for k, v in saved.items():
            assert_array_equal(np.asarray(back[k]), np.asarray(v))
        outcomes["saved"] += 1

    sig = signal.SIGALRM if how == "alarm" else signal.SIGTERM
    signal.signal(sig, handler)
    m = mx.random.normal((256, 256), key=mx.random.key(1), stream=device) / 16
    mx.eval(m)
    for i in range(rounds):
        h = m
        for _ in range(rng.randint(1, 40)):
            h = mx.tanh(h @ m, stream=device)
        state["pending"] = h[:4, :4] * 2               # depends on the eval in flight
        state["lazy"] = mx.arange(10, stream=device) + i  # independent, not yet evaluated
        delay = rng.uniform(0, 0.02)
        if how == "alarm":
            signal.setitimer(signal.ITIMER_REAL, delay)
        else:
            threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM)).start()
        try:
            out = mx.sum(h, stream=device).item()
        except RuntimeError as e:  # the handler's refusal, raised where it ran
            assert "umx:" in str(e), e
            out = mx.sum(h, stream=device).item()
        assert np.isfinite(out)
        signal.setitimer(signal.ITIMER_REAL, 0)
    import time
    time.sleep(0.05)  # a last timer may still fire
    print(outcomes)
    assert outcomes["saved"] > 0, outcomes
""")


@pytest.mark.parametrize("how", ["alarm", "term"])
def test_a_handler_that_evaluates_during_an_eval_completes_or_refuses(device, how):
    if device == mx.gpu and not mx.is_available(mx.gpu):
        pytest.skip("no CUDA GPU")
    dev = "gpu" if device == mx.gpu else "cpu"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONFAULTHANDLER="1")
    watchdog = f"import faulthandler; faulthandler.dump_traceback_later({WATCHDOG_S - 10}, exit=True)\n"
    try:
        r = subprocess.run([sys.executable, "-c", watchdog + SCRIPT, dev, how, str(ROUNDS)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=WATCHDOG_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung: {e.stderr}")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_wait_for_work_the_waiting_thread_holds_raises_instead_of_hanging():
    s = mx.new_stream(mx.cpu)
    ex = s.executor
    x = mx.arange(4, stream=s) + 1
    mx.eval(x)
    assert ex.try_run_inline()  # this thread now holds the stream, as a caller running its batch does
    try:
        with pytest.raises(RuntimeError, match="only it can run"):
            ex.wait(ex.submitted + 1)
    finally:
        ex._run_lock.release()


def test_signal_handlers_are_given_back_after_an_eval():
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    prev = signal.signal(signal.SIGUSR1, handler)
    try:
        a = mx.arange(10) * 2 + 1
        mx.eval(a)
        assert signal.getsignal(signal.SIGUSR1) is handler
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, prev)


def test_work_that_nothing_holds_after_a_ctrl_c_is_dropped(monkeypatch):
    from umx.backends.cpu import executor as cpu_executor
    from umx.primitives import Sort

    ran = []
    sort = cpu_executor.KERNELS[Sort]

    def counted(prim, x):
        ran.append(1)
        if len(ran) == 1:  # Ctrl-C once the first sort runs (a timer may fire before any has started)
            os.kill(os.getpid(), signal.SIGINT)
        return sort(prim, x)

    monkeypatch.setitem(cpu_executor.KERNELS, Sort, counted)
    s = mx.new_stream(mx.cpu)
    x = mx.random.uniform(shape=(1 << 18,), stream=s)
    mx.eval(x)
    with pytest.raises(KeyboardInterrupt):
        mx.eval([mx.sort(x + i, stream=s) for i in range(400)])  # seconds of sorting
        time.sleep(5)  # (should the eval end before the signal)
    small = mx.add(x[:2], 1, stream=s)
    mx.eval(small)  # behind what was running, not behind the abandoned sorts
    mx.synchronize(s)
    assert 0 < len(ran) < 100, len(ran)
    np.testing.assert_allclose(np.asarray(small), np.asarray(x[:2]) + 1)
