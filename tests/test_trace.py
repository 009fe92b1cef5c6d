"""Tracing (mx.trace, the summary and plot CLI), mx.memory_report and UMX_LOG debug logging."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import umx as mx
from umx.array import from_data, node
from umx.backends.cuda import traced
from umx.primitives.shape import Reshape
from umx.runtime import memory, scheduler
from umx.runtime import tracing as _tracing
from umx.runtime.executor import Failure, set_result
from umx.runtime.fusion import Fused
from umx.trace import load, to_chrome
from umx.trace.summary import format_summary, summarize

ROOT = Path(__file__).resolve().parents[1]


def seed_fun(a, b, d1, d2):
    """The seed's example (docs: unified memory)."""
    x = mx.matmul(a, b, stream=d1)
    for _ in range(500):
        b = mx.exp(b, stream=d2)
    return x, b


@pytest.fixture(scope="module")
def seed_trace(tmp_path_factory):
    """The seed's example traced on two CPU streams. ``a`` is host data; ``b`` is made lazily on the default
    stream, so that the matmul and the first exp each wait for it on another stream (two flows), and both
    lanes start when it is ready. The matmul is scaled up to overlap the exp chain on 2 cores."""
    d1, d2 = mx.new_stream(mx.cpu), mx.new_stream(mx.cpu)
    a = mx.array(np.random.default_rng(0).random((4096, 1024), np.float32))
    b = mx.random.uniform(shape=(1024, 64), stream=mx.cpu)
    path = tmp_path_factory.mktemp("trace") / "run.json"
    # Per-op lanes are what this test reads: fusion would make the 500 exps one span (tested separately).
    saved, scheduler.FUSION = scheduler.FUSION, False
    try:
        with mx.trace(path):
            x, y = seed_fun(a, b, d1, d2)
            mx.eval(x, y)
    finally:
        scheduler.FUSION = saved
    return path, d1, d2


def _ops(data, stream) -> list:
    return [e for e in data["traceEvents"] if e["ph"] == "X" and e["cat"] == "op"
            and e["args"]["stream"] == repr(stream)]


def _inside(ts, ev) -> bool:
    return ev["ts"] - 1e-3 <= ts <= ev["ts"] + ev["dur"] + 1e-3


def test_seed_on_two_cpu_streams_overlaps_and_shows_every_dependency(seed_trace):
    path, d1, d2 = seed_trace
    data = load(path)
    lanes = {e["args"]["name"]: (e["pid"], e["tid"]) for e in data["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert repr(d1) in lanes and repr(d2) in lanes and "thread MainThread" in lanes
    mm, exps = _ops(data, d1), _ops(data, d2)
    assert len(mm) == 1 and len(exps) == 500
    assert mm[0]["name"] == "Matmul float32[4096,1024] float32[1024,64] -> float32[4096,64]"
    assert all(e["name"] == "Exp float32[1024,64] -> float32[1024,64]" for e in exps)
    assert all((e["pid"], e["tid"]) == lanes[repr(d1)] for e in mm)
    assert all((e["pid"], e["tid"]) == lanes[repr(d2)] for e in exps)

    # The two lanes' busy intervals overlap in time: the streams ran in parallel.
    start1, end1 = mm[0]["ts"], mm[0]["ts"] + mm[0]["dur"]
    start2, end2 = min(e["ts"] for e in exps), max(e["ts"] + e["dur"] for e in exps)
    assert max(start1, start2) < min(end1, end2)

    # Every planned cross-stream wait appears as a flow from the producer op to the consumer op.
    ops = {(e["args"]["stream"], e["args"]["seq"]): e for e in data["traceEvents"] if e.get("cat") == "op"}
    flows: dict = {}
    for e in data["traceEvents"]:
        if e["ph"] in "sf":
            flows.setdefault(e["id"], {})[e["ph"]] = e
    waits = [(op, w) for op in ops.values() for w in op["args"].get("waits", ())]
    assert sorted(op["args"]["op"] for op, _ in waits) == ["Exp", "Matmul"]
    assert len(flows) == len(waits) == 2 and data["otherData"]["flows_unresolved"] == 0
    for consumer, w in waits:
        stream, seq = w.rsplit(" #", 1)
        producer = ops[(stream, int(seq))]
        # b, made on the default stream: the last op of uniform's graph
        assert stream == repr(mx.default_stream(mx.cpu)) and producer["name"].endswith("-> float32[1024,64]")
        assert any(f["s"]["tid"] == producer["tid"] and _inside(f["s"]["ts"], producer)
                   and f["f"]["tid"] == consumer["tid"] and _inside(f["f"]["ts"], consumer)
                   and f["f"].get("bp") == "e" for f in flows.values())
    evals = [e for e in data["traceEvents"] if e.get("cat") == "eval"]
    assert len(evals) == 1 and (evals[0]["pid"], evals[0]["tid"]) == lanes["thread MainThread"]


def test_summary_cli(seed_trace):
    path, d1, d2 = seed_trace
    out = subprocess.run([sys.executable, "-m", "umx.trace", "summary", str(path), "--top", "2"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "busy ms" in out and "idle ms" in out and "copied" in out and "longest ops:" in out
    row = next(line for line in out.splitlines() if line.startswith(repr(d2)))
    assert " 500 " in row
    assert "Matmul float32[4096,1024] float32[1024,64] -> float32[4096,64]" in out
    s = summarize(load(path))
    by_name = {r["name"]: r for r in s["lanes"]}
    assert by_name[repr(d1)]["ops"] == 1 and len(by_name[repr(d2)]["longest"]) == 3
    for r in s["lanes"]:
        assert r["busy"] + r["idle"] == pytest.approx(s["duration"], abs=1e-3)


def test_plot(seed_trace, tmp_path):
    pytest.importorskip("matplotlib")
    from umx.trace.plot import plot

    out = tmp_path / "timeline.png"
    plot(load(seed_trace[0]), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _FakeDeviceData:
    """Data "on a device" that only the fake location handler below can read."""

    def __init__(self, host):
        self.host = host
        self.shape = host.shape


class _FakeLocation:
    name = "fake"

    def to_host(self, a):
        return a._data.host.copy()

    def active(self):
        return 123

    def peak(self):
        return 456

    def cache(self):
        return 7


def test_copies_waits_and_failures_are_recorded(monkeypatch):
    monkeypatch.setitem(memory._locations, _FakeDeviceData, _FakeLocation())
    x = from_data(_FakeDeviceData(np.arange(12, dtype=np.float32).reshape(3, 4)), mx.float32)
    s = mx.new_stream(mx.cpu)
    with mx.trace() as t:
        y = mx.add(x, 1, stream=s)  # a slow-path task: its input is copied to the host
        mx.eval(y)
        bad = node(Reshape((3,)), (mx.array([1.0, 2.0]),), (3,), mx.float32, s)  # its kernel raises
        with pytest.raises(ValueError):
            mx.eval(bad)
    np.testing.assert_array_equal(np.asarray(y), np.arange(12).reshape(3, 4) + 1)
    events = t.data["traceEvents"]
    copies = [e for e in events if e.get("cat") == "copy"]
    assert len(copies) == 1 and copies[0]["args"]["bytes"] == 48 and copies[0]["args"]["to"] == "host"
    failed = [e for e in events if e.get("cat") == "op" and "failed" in e.get("args", {})]
    assert len(failed) == 1 and failed[0]["name"].startswith("Reshape")
    assert summarize(t.data)["lanes"][0]["bytes_copied"] == 48
    assert "48 B (1)" in format_summary(summarize(t.data))
    report = mx.memory_report()
    assert report["locations"]["fake"] == {"active": 123, "peak": 456, "cache": 7}


def test_trace_state(tmp_path):
    assert _tracing.active is None
    with pytest.raises(ZeroDivisionError):
        with mx.trace(tmp_path / "t.json"):
            with pytest.raises(RuntimeError, match="already"):
                with mx.trace():
                    pass
            mx.eval(mx.add(mx.array(1), 2))
            raise ZeroDivisionError
    assert _tracing.active is None
    data = json.loads((tmp_path / "t.json").read_text())
    ops = [e["name"] for e in data["traceEvents"] if e.get("cat") == "op"]
    assert ops == ["Add int32[] int32[] -> int32[]"]


def test_async_eval_is_traced_and_finished_on_exit():
    s = mx.new_stream(mx.cpu)
    with mx.trace() as t:
        y = mx.exp(mx.ones((4, 4)), stream=s)
        mx.async_eval(y)
    names = [e["name"] for e in t.data["traceEvents"] if e["ph"] == "X"]
    assert "async_eval" in names and "Exp float32[4,4] -> float32[4,4]" in names


class _FakeEvent:
    def __init__(self, ms):
        self.ms = ms


def test_gpu_ops_are_put_on_the_host_time_base():
    rec = _tracing.Recorder()
    stream = mx.default_stream(mx.cpu)  # stands in for a GPU stream: only .device and repr are used
    anchor_ns = rec.start_ns + 1_000_000
    rec.set_gpu_clock(stream.device, _FakeEvent(5.0), anchor_ns, lambda a, b: b.ms - a.ms)
    rec.gpu_op(stream, "Exp float32[2] -> float32[2]", _FakeEvent(6.0), _FakeEvent(6.5), seq=1,
               args={"op": "Exp"})
    consumer = mx.new_stream(mx.cpu)
    rec.op("Add", anchor_ns + 2_000_000, anchor_ns + 3_000_000, consumer, 4, {"op": "Add"})
    rec.flow(stream, 1, consumer, 4)
    rec.finish()
    data = to_chrome(rec)
    (gpu,) = [e for e in data["traceEvents"] if e.get("name", "").startswith("Exp")]
    assert gpu["ts"] == pytest.approx(2000.0) and gpu["dur"] == pytest.approx(500.0)
    assert {e["ph"] for e in data["traceEvents"]} == {"M", "X", "s", "f"}


def test_gpu_spans_that_cannot_be_timed_are_left_out(caplog):
    rec = _tracing.Recorder()
    stream = mx.default_stream(mx.cpu)

    def elapsed(a, b):
        if b.ms is None:  # e.g. an event that was never recorded
            raise RuntimeError("cudaErrorInvalidResourceHandle")
        return b.ms - a.ms

    rec.set_gpu_clock(stream.device, _FakeEvent(0.0), rec.start_ns, elapsed)
    rec.gpu_op(stream, "Exp", _FakeEvent(1.0), _FakeEvent(None), seq=1)
    rec.gpu_op(stream, "copy host -> gpu", _FakeEvent(1.0), _FakeEvent(2.0), cat="copy", suffix=" (copies)",
               args={"bytes": 8})
    with caplog.at_level(logging.WARNING, logger="umx"):
        rec.finish()
    assert [(s[0][1], s[1], s[2]) for s in rec.spans] == [(" (copies)", "copy", "copy host -> gpu")]
    assert any("1 GPU spans left out" in r.getMessage() for r in caplog.records)


class _FakeStream:
    """A CUDA stream as the traced path sees it: a clock (ms) that kernels and copies advance."""

    def __init__(self, non_blocking=True):
        self.clock = 0.0

    def wait_event(self, event):
        self.clock = max(self.clock, event.ms)


class _FakeCudaEvent:
    broken = False  # set: recording raises, as a driver error would

    def __init__(self, disable_timing=False):
        self.ms = None

    def record(self, stream):
        if _FakeCudaEvent.broken:
            raise RuntimeError("no events today")
        self.ms = stream.clock

    def synchronize(self):
        pass


class _FakeGpu(traced.TracedBatches):
    """The hooks of CudaExecutor that the traced path calls, on fake streams: each kernel takes 2 ms, each
    copy of an input to the device 1 ms (once per input), and the node ``bad`` fails."""

    def __init__(self, stream, bad=None):
        self.stream, self.device, self.bad = stream, stream.device, bad
        self.cuda_stream, self.copy_stream = _FakeStream(), _FakeStream()
        self.copied, self.log = set(), []

    def _run(self, tasks):
        (t,) = tasks
        n = t[0] if type(t) is tuple else t
        if type(t) is tuple:
            self.fetch(n._inputs, [])
        self.cuda_stream.clock += 2.0
        set_result(n, Failure(ValueError("boom")) if n is self.bad else np.zeros(n._shape, n._dtype.np))
        self.log.append(n._seq)
        self.copied.add(id(n.root if type(n) is Fused else n))  # its data is on the device

    def wait_for(self, waits):
        self.log.append(("wait", waits))

    def fetch(self, ins, held):
        for x in ins:
            if id(x) not in self.copied:  # like CudaExecutor.copy_in: once, and before this stream reads it
                self.copied.add(id(x))
                start = self._copy_begin(self.cuda_stream) if self._tr is not None else None
                self.copy_stream.clock += 1.0
                if start is not None:
                    self._copy_end(start, x.nbytes, "host", repr(self.device), x)
                self.cuda_stream.wait_event(SimpleNamespace(ms=self.copy_stream.clock))

    def _end_batch(self):
        self.log.append("end")


def _gpu_batch(rng):
    s, other = mx.new_stream(mx.cpu), mx.new_stream(mx.cpu)  # stand-ins: only .device and repr are used
    x = mx.array(rng.random((2, 3), np.float32))
    y = mx.array(rng.random((2, 3), np.float32))
    n1 = mx.exp(x, stream=s)
    n2 = mx.add(n1, y, stream=s)
    a = mx.sin(n2, stream=s)
    b = mx.cos(a, stream=s)
    f = Fused([a, b], [n2], ((a._prim, (0,)), (b._prim, (1,))), None)
    bad = mx.negative(b, stream=s)
    for seq, n in enumerate((n1, n2, f, bad), 1):
        n._seq = seq
    other_ex = SimpleNamespace(stream=other)
    return s, other, [n1, (n2, [(other_ex, 7)]), f, bad], (n1, n2, b, bad)


def test_cuda_traced_batch_times_ops_and_copies_with_events(monkeypatch, rng):
    fake_cp = SimpleNamespace(cuda=SimpleNamespace(Event=_FakeCudaEvent, Stream=_FakeStream,
                                                   get_elapsed_time=lambda a, b: b.ms - a.ms))
    monkeypatch.setattr(traced, "cp", fake_cp)
    s, other, tasks, outs = _gpu_batch(rng)
    ex = _FakeGpu(s, bad=tasks[3])
    rec = _tracing.Recorder()
    ex.run_traced(tasks, rec)
    assert ex._tr is None and ex.log[-1] == "end" and rec.has_gpu_clock(s.device)
    assert [e for e in ex.log if type(e) is int] == [1, 2, 3, 4] and all(o._data is not None for o in outs)
    rec.finish()
    events = to_chrome(rec)["traceEvents"]
    lanes = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    spans = {(lanes[e["tid"]], e["name"]): e for e in events if e["ph"] == "X"}
    base = repr(s)
    # GPU lane: each op from its start to its end event, 2 ms; the add starts once y's copy (1 ms) is done
    ops = sorted((e for (lane, _), e in spans.items() if lane == base), key=lambda e: e["ts"])
    assert [e["name"].split(" ")[0] for e in ops] == ["Exp", "Add", "Fused(Sin,", "Negative"]
    assert [e["args"]["seq"] for e in ops] == [1, 2, 3, 4] and all(e["cat"] == "op" for e in ops)
    assert all(e["dur"] == pytest.approx(2000.0) for e in ops)
    t0 = ops[0]["ts"]
    assert [e["ts"] - t0 for e in ops] == pytest.approx([0.0, 3000.0, 5000.0, 7000.0])
    assert ops[2]["name"] == "Fused(Sin, Cos) float32[2,3] -> float32[2,3]"
    assert ops[1]["args"]["waits"] == [f"{other!r} #7"] and "failed" in ops[3]["args"]
    # copy lane: the input that was not on the device (n1 is this stream's own: no copy)
    (copy,) = [e for (lane, _), e in spans.items() if lane == base + traced.COPIES]
    assert copy["cat"] == "copy" and copy["args"]["bytes"] == 24 and copy["args"]["to"] == repr(s.device)
    assert copy["ts"] - t0 == pytest.approx(2000.0) and copy["dur"] == pytest.approx(1000.0)
    # host lane: the cross-stream wait, timed on the host
    (wait,) = [e for (lane, _), e in spans.items() if lane == base + traced.HOST]
    assert wait["cat"] == "wait" and wait["name"] == f"wait {other!r} #7"


def test_cuda_traced_batch_runs_every_op_when_events_fail(monkeypatch, rng):
    fake_cp = SimpleNamespace(cuda=SimpleNamespace(Event=_FakeCudaEvent, Stream=_FakeStream,
                                                   get_elapsed_time=lambda a, b: b.ms - a.ms))
    monkeypatch.setattr(traced, "cp", fake_cp)
    monkeypatch.setattr(_FakeCudaEvent, "broken", True)
    s, _, tasks, outs = _gpu_batch(rng)
    ex = _FakeGpu(s)
    rec = _tracing.Recorder()
    ex.run_traced(tasks, rec)
    rec.finish()
    assert all(type(o._data) is np.ndarray for o in outs) and ex.log[-1] == "end"
    assert not rec.has_gpu_clock(s.device)
    assert [sp[1] for sp in rec.spans] == ["wait"]  # only the host-timed wait


def test_memory_report():
    a = mx.array(np.zeros((257, 1000), np.float32))
    b = mx.exp(a)
    mx.eval(b)
    r = mx.memory_report(top=3)
    assert set(r) == {"locations", "live_arrays", "live_bytes", "largest"}
    assert set(r["locations"]["host"]) == {"active", "peak", "cache"}
    assert r["locations"]["host"]["peak"] >= r["locations"]["host"]["active"] > 0
    assert len(r["largest"]) <= 3 and r["live_arrays"] >= 2
    assert r["largest"][0]["nbytes"] >= a.nbytes
    assert {"shape", "dtype", "nbytes", "location", "copies", "stream"} <= set(r["largest"][0])
    assert any(x["shape"] == (257, 1000) and x["location"] == "host" for x in r["largest"])
    assert "live arrays" in str(r)


def _cross_stream_program():
    s = mx.new_stream(mx.cpu)
    x = mx.exp(mx.ones((3,)), stream=mx.cpu)
    mx.eval(mx.add(x, 1, stream=s))


def test_debug_logging_with_caplog(caplog):
    caplog.set_level(logging.DEBUG, logger="umx")
    _cross_stream_program()
    msgs = [r.getMessage() for r in caplog.records if r.name == "umx"]
    assert any(m.startswith("plan: ") for m in msgs)
    assert any(m.startswith("wait: Add") and "after Stream" in m for m in msgs)


@pytest.mark.parametrize("level", ["debug", ""])
def test_umx_log_env(level):
    code = ("import umx as mx\ns = mx.new_stream(mx.cpu)\nx = mx.exp(mx.ones((3,)), stream=mx.cpu)\n"
            "mx.eval(mx.add(x, 1, stream=s))\n")
    env = dict(os.environ, UMX_LOG=level)
    err = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stderr
    if level:
        assert "umx DEBUG [MainThread] plan:" in err and "wait: Add" in err
    else:
        assert "umx" not in err


def test_fused_region_is_one_span_named_by_its_steps(tmp_path):
    x = mx.array(np.random.default_rng(1).random((512, 256), np.float32))
    y = x
    for _ in range(20):
        y = mx.sin(y, stream=mx.cpu)
    path = tmp_path / "fused.json"
    with mx.trace(path):
        mx.eval(y)
    names = [e["name"] for e in load(path)["traceEvents"] if e["ph"] == "X" and e.get("cat") == "op"]
    assert len(names) == 1 and names[0].startswith("Fused(") and "x20" in names[0]
