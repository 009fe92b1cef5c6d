"""mx.distributed: a world of one process (this one); the order of communication (turns); the launcher's command
line; then jobs of several processes through ``python -m umx.launch`` (skipped without mpi4py or mpirun): umx's
own cases (tests/mpi_cases.py) with 2 and 4 processes, MLX's mpi_test_distributed.py through an alias package,
the launcher stopping a job whose rank fails, and the tensor-parallel example."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import umx as mx
from tests.conftest import assert_close
from umx import launch
from umx.distributed import _ops
from umx.distributed._group import BACKEND_VARIABLE
from umx.distributed._turns import Turns
from umx.primitives.base import param_names
from umx.primitives.distributed import COMMUNICATION, AllGather, AllReduce, Recv, Send, SumScatter

ROOT = Path(__file__).resolve().parents[1]
_REL = Path("shared") / "reference" / "mlx_tests"
# shared/ sits beside the repository (CI clones it there); a git worktree may sit one level deeper.
MLX_TESTS = next((p / _REL for p in ROOT.parents if (p / _REL).exists()), ROOT.parent / _REL)


def _mpirun():
    here = os.path.dirname(sys.executable)
    return shutil.which("mpirun", path=os.pathsep.join([here, os.environ.get("PATH", "")]))


needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or _mpirun() is None,
                               reason="needs mpi4py and mpirun (pip install '.[distributed]')")
needs_gpu = pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")


# -- a world of one process ------------------------------------------------------------------------------------
def test_world_of_one_returns_inputs(device):
    world = mx.distributed.init()
    assert (world.rank(), world.size()) == (0, 1)
    assert mx.distributed.init() is world
    x = mx.arange(6, dtype=mx.float32).reshape(2, 3)
    for op in (mx.distributed.all_sum, mx.distributed.all_max, mx.distributed.all_min,
               mx.distributed.all_gather, mx.distributed.sum_scatter):
        assert op(x, stream=device) is x
        assert op(x, group=world) is x
    assert mx.distributed.all_sum(3.0).item() == 3.0


def test_world_of_one_refuses_transfers_and_splits():
    world = mx.distributed.init()
    with pytest.raises(ValueError, match="send"):
        mx.distributed.send(mx.ones(2), 0)
    with pytest.raises(ValueError, match="recv"):
        mx.distributed.recv((2,), mx.float32, 0)
    with pytest.raises(ValueError, match="recv"):
        mx.distributed.recv_like(mx.ones(2), 0, group=world)
    with pytest.raises(RuntimeError, match="split"):
        world.split(0)


def test_transforms_in_a_world_of_one():
    x = mx.array([1.0, -2.0, 3.0])
    assert_close(mx.grad(lambda v: (mx.distributed.all_sum(v) ** 2).sum())(x), 2 * np.array([1.0, -2.0, 3.0]))
    assert_close(mx.vmap(mx.distributed.all_gather)(mx.ones((4, 3))), np.ones((4, 3)))
    _, t = mx.jvp(mx.distributed.all_max, [x], [mx.ones(3)])
    assert_close(t[0], np.ones(3))


def test_init_checks_its_arguments(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        mx.distributed.init(backend="foo")
    with pytest.raises(ValueError, match="jaccl"):
        mx.distributed.init(backend="ring", all_gather_factory=lambda rank, size: None)
    with pytest.raises(TypeError, match="callable"):
        mx.distributed.init(backend="jaccl", all_gather_factory="not callable")
    for name in ("ring", "jaccl"):
        assert mx.distributed.init(backend=name).size() == 1  # MLX's own transports: a world of one
        with pytest.raises(RuntimeError, match=name):
            mx.distributed.init(strict=True, backend=name)
    with pytest.raises(RuntimeError, match="any"):
        mx.distributed.init(strict=True)  # started alone, not by a launcher
    if not mx.distributed.is_available("nccl"):
        with pytest.raises(RuntimeError, match="NCCL"):
            mx.distributed.init(strict=True, backend="nccl")
    monkeypatch.setenv(BACKEND_VARIABLE, "ring")
    with pytest.raises(RuntimeError, match="ring"):
        mx.distributed.init(strict=True)
    monkeypatch.setenv(BACKEND_VARIABLE, "tcp")
    with pytest.raises(ValueError, match=BACKEND_VARIABLE):
        mx.distributed.init()


def test_any_takes_nccl_only_where_every_rank_has_a_gpu_of_its_own(monkeypatch):
    """Backend "any" decides on every rank's report (each rank sees the same list, so all agree): two ranks on
    one GPU, or a rank without NCCL, leave GPU arrays to MPI, where NCCL would refuse or wait forever."""
    from umx.distributed import _group

    class World:  # an MPI communicator's set-up call, every rank's answer given
        def __init__(self, others):
            self.others = others

        def allgather(self, mine):
            return [mine, *self.others]

    class Cuda:
        @staticmethod
        def gpu_identity(index):
            return "host/0000:18:00.0"

    monkeypatch.setattr(_group, "_cuda", lambda: Cuda)
    monkeypatch.setattr(_group, "_nccl_available", lambda: True)
    assert _group._nccl_everywhere(World(["host/0000:2a:00.0", "other/0000:18:00.0"]))
    assert not _group._nccl_everywhere(World(["host/0000:18:00.0"]))  # two ranks, one GPU
    assert not _group._nccl_everywhere(World(["host/0000:2a:00.0", None]))  # a rank without NCCL
    monkeypatch.setattr(_group, "_nccl_available", lambda: False)
    assert not _group._nccl_everywhere(World(["host/0000:2a:00.0"]))


def test_is_available():
    assert mx.distributed.is_available("mpi") == (importlib.util.find_spec("mpi4py") is not None)
    assert not mx.distributed.is_available("ring") and not mx.distributed.is_available("jaccl")
    assert mx.distributed.is_available() == (mx.distributed.is_available("mpi")
                                             or mx.distributed.is_available("nccl"))
    if not mx.is_available(mx.gpu):
        assert not mx.distributed.is_available("nccl")


def test_bad_arguments_raise_at_the_call():
    with pytest.raises(TypeError, match="all_sum: group"):
        mx.distributed.all_sum(mx.ones(2), group=3)
    with pytest.raises(TypeError, match="no constructor"):
        mx.distributed.Group()
    with pytest.raises(TypeError, match="all_gather"):
        mx.distributed.all_gather(object())


# -- turns: one communication call at a time, in plan order ---------------------------------------------------
class _Node:
    """A stand-in for a planned communication node: what Turns reads of one."""

    def __init__(self):
        self._prim = AllReduce(None, "sum")
        self._data = None


def _run_turns(turns, tickets, log):
    """Threads that take ``tickets``' turns, started in the reverse order; ``log`` gets the order they ran in."""
    def take(ticket):
        with turns.turn(ticket):
            log.append(ticket)

    threads = [threading.Thread(target=take, args=(t,)) for t in reversed(tickets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a turn was never given"


def test_turns_follow_plan_order():
    turns = Turns()
    nodes = [_Node() for _ in range(4)]
    shared = nodes[0]._prim
    turns.assign(nodes + [object()])  # (other tasks are passed over)
    assert [n._prim.ticket for n in nodes] == [1, 2, 3, 4]
    assert shared.ticket == 0  # the op's primitive is left as it was: each node gets a copy
    log: list = []
    _run_turns(turns, [1, 2, 3, 4], log)
    assert log == [1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="already taken"):
        with turns.turn(2):
            pass
    with pytest.raises(RuntimeError, match="without a turn"):
        with turns.turn(0):
            pass


def test_a_ticketed_copy_keeps_every_parameter():
    prims = [AllReduce("g", "max"), AllGather("g"), SumScatter("g"), Send("g", 3),
             Recv("g", 1, (2, 3), mx.float16)]
    assert {type(p) for p in prims} == set(COMMUNICATION)
    for p in prims:
        copy = p.with_ticket(7)
        assert type(copy) is type(p) and (copy.ticket, p.ticket) == (7, 0)
        assert all(getattr(copy, s) == getattr(p, s) for s in param_names(type(p)) if s != "ticket")


def test_turns_skip_nodes_that_finished_without_one():
    turns = Turns()
    nodes = [_Node() for _ in range(4)]
    turns.assign(nodes)
    nodes[0]._data = "a failure"  # its input failed: the kernel never ran
    nodes[2] = None  # run and dropped without its turn
    log: list = []
    _run_turns(turns, [2, 4], log)
    assert log == [2, 4]
    with turns.now():  # a call made at once takes the next ticket
        log.append("now")
    assert log[-1] == "now"


# -- the launcher's command line ---------------------------------------------------------------------------
def _command(argv):
    args = launch._parser().parse_args(argv)
    return launch.mpirun_command(args, "mpirun")


def test_launcher_command(tmp_path, monkeypatch):
    monkeypatch.delenv("OMPI_MCA_mpi_yield_when_idle", raising=False)
    cmd, env = _command(["-n", "3", "--backend", "mpi", "--env", "A=1", "s.py", "--lr", "2"])
    assert cmd[:5] == ["mpirun", "-n", "3", "--host", "localhost:3"]
    assert "--tag-output" in cmd and env[BACKEND_VARIABLE] == "mpi" and env["A"] == "1"
    assert cmd[cmd.index("--worker"):] == ["--worker", "s.py", "--lr", "2"]
    assert ("OMPI_MCA_mpi_yield_when_idle" in env) == (3 > (os.cpu_count() or 1))
    cmd, _ = _command(["--hosts", "a,b", "-n", "2", "s.py"])
    assert cmd[1:5] == ["-n", "4", "--host", "a:2,b:2"]
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the cluster\nnode1 slots=4\nnode2   # one process\n")
    assert launch.read_hostfile(str(hostfile)) == [("node1", 4), ("node2", None)]
    cmd, _ = _command(["--hostfile", str(hostfile), "s.py"])
    assert cmd[1:5] == ["-n", "5", "--host", "node1:4,node2:1"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _command(["--env", "A", "s.py"])


def test_launcher_prefixes_lines_with_ranks():
    out = io.BytesIO()
    launch._forward(io.BytesIO(b"[1,3]<stdout>: hello\nplain\n[1,0]<stderr>: \n[1,2]<stdout>: "), out)
    assert out.getvalue() == b"[3] hello\nplain\n[0] \n"


def test_each_rank_sees_its_own_gpu(tmp_path, monkeypatch):
    script = tmp_path / "show.py"
    script.write_text("import os, sys\nopen(sys.argv[1], 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', ''))\n")
    seen = tmp_path / "seen"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert launch.run_rank(str(script), [str(seen)]) == 0
    assert seen.read_text() == "5"


# -- jobs of several processes ------------------------------------------------------------------------------
def _job(n: int, *argv, timeout: int = 240, options=()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "umx.launch", "-n", str(n), *options, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _passed(job: subprocess.CompletedProcess) -> bool:
    if job.returncode != 0:
        print(job.stdout[-6000:], job.stderr[-6000:], sep="\n")
    return job.returncode == 0


@needs_mpi
@pytest.mark.parametrize("n", [2, 4])
def test_collectives_across_processes(n, tmp_path):
    job = _job(n, "tests/mpi_cases.py", "cpu", str(tmp_path))
    assert _passed(job)
    assert "[0] ok case_overlap" in job.stdout


# MLX's tests that umx does not run: what they need (names of mlx.nn that umx.nn must provide), or why
_MLX_NEEDS = {
    "test_average_gradients": ["nn.utils.average_gradients"],
    "test_shard_linear": ["nn.Linear", "nn.layers.distributed.shard_linear", "core.quantize"],  # (and quantized)
    "test_shard_predicate": ["nn.Conv2d", "nn.layers.distributed.shard_inplace"],
    "test_clip_grad_norm_sharded": ["nn.utils.clip_grad_norm_sharded"],
}
_MLX_SKIPPED = {
    "test_groups": "written for a world of exactly 8 processes (as in MLX's CI); tests/mpi_cases.py splits any",
    "test_mixed": "written for a world of exactly 8 processes; tests/mpi_cases.py runs it for any even size",
}

_SHIM = '''
import importlib, sys, types
import umx as core
sys.modules["mlx.core"] = core
# what MLX's distributed test modules import from mlx.nn: None stands in for what umx does not have yet
imported = {"nn.layers.distributed": ["shard_inplace", "shard_linear"],
            "nn.utils": ["average_gradients", "clip_grad_norm_sharded"]}
for name in ("nn", "nn.layers", "nn.layers.distributed", "nn.utils", "optimizers", "utils"):
    try:
        module = importlib.import_module("umx." + name)
    except ImportError:
        module = None
    names = imported.get(name, [])
    if module is None or not all(hasattr(module, n) for n in names):
        stub = types.ModuleType("mlx." + name)
        stub.__dict__.update(vars(module) if module is not None else {})
        for n in names:
            stub.__dict__.setdefault(n, None)
        module = stub
    sys.modules["mlx." + name] = module
'''

_RUNNER = '''
import sys, unittest
sys.path[:0] = [{shim!r}, {tests!r}]
import mlx
import mpi_test_distributed as t
needs, skipped = {needs!r}, {skipped!r}

def has(path):
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get("mlx." + ".".join(parts[:i]))
        if obj is not None:
            for part in parts[i:]:
                obj = getattr(obj, part, None)
            return obj is not None
    return False

cases = [c for c in unittest.TestLoader().loadTestsFromTestCase(t.TestMPIDistributed)
         if c._testMethodName not in skipped and all(map(has, needs.get(c._testMethodName, [])))]
print("running", len(cases), "of MLX's tests:", " ".join(c._testMethodName for c in cases))
result = unittest.TextTestRunner(verbosity=2, failfast=True).run(unittest.TestSuite(cases))
sys.exit(0 if result.wasSuccessful() else 1)
'''


@needs_mpi
@pytest.mark.skipif(not (MLX_TESTS / "mpi_test_distributed.py").exists(), reason=f"no {MLX_TESTS}")
def test_mlx_mpi_test_distributed(tmp_path):
    """MLX's own MPI test file, read from the shared reference folder at run time, on umx through an alias
    package (as shared/tools/mlx_conformance.py does), in a job of 2 processes."""
    shim = tmp_path / "shim"
    (shim / "mlx").mkdir(parents=True)
    (shim / "mlx" / "__init__.py").write_text(_SHIM)
    runner = tmp_path / "run_mlx.py"
    runner.write_text(_RUNNER.format(shim=str(shim), tests=str(MLX_TESTS), needs=_MLX_NEEDS, skipped=_MLX_SKIPPED))
    job = _job(2, str(runner))
    assert _passed(job)
    print(job.stdout.splitlines()[0])  # which of MLX's tests ran
    assert "OK" in job.stderr


_FAILING = '''
import os, signal, sys
import umx as mx
world = mx.distributed.init()
if world.rank() == 1:
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("rank 1 gives up")
mx.eval(mx.distributed.all_sum(mx.ones(3)))  # waits for rank 1, which never comes
'''


@needs_mpi
@pytest.mark.parametrize("how", ["kill", "raise"])
def test_launcher_stops_the_job_when_a_rank_fails(how, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(_FAILING)
    job = _job(2, str(script), how, timeout=120)  # (a hang would end the test with TimeoutExpired)
    assert job.returncode != 0
    assert "umx.launch: the job failed" in job.stderr
    if how == "raise":
        assert "[1] RuntimeError: rank 1 gives up" in job.stderr
        assert "rank 1 raised RuntimeError: stopping the job" in job.stderr
    else:
        assert "signal 9" in job.stderr


@needs_mpi
def test_tensor_parallel_example():
    job = _job(2, "examples/distributed/tensor_parallel.py")
    assert _passed(job)
    assert "[0] the sharded forward pass matches the single-process one" in job.stdout


# -- GPUs ------------------------------------------------------------------------------------------------------
@needs_gpu
@pytest.mark.gpu
@pytest.mark.skipif(not mx.distributed.is_available("nccl"), reason="no NCCL (CuPy's bindings)")
def test_nccl_world_of_one_gpu():
    """NCCL's kernels in a world of one GPU: the public ops return their input there, so the nodes are built
    directly."""
    world = mx.distributed.init(strict=True, backend="nccl")
    assert world.size() == 1 and world.nccl is not None
    s = mx.default_stream(mx.gpu)
    for dtype in (mx.bool_, mx.int16, mx.uint8, mx.float16, mx.float32, mx.complex64):
        x = (mx.arange(8).reshape(2, 4) - 3).astype(dtype)
        for op in ("sum", "max", "min"):
            assert_close(_ops.reduce_node(x, op, world, s), np.asarray(x))
        assert_close(_ops.gather_node(x, world, s), np.asarray(x))
        assert_close(_ops.scatter_node(x, world, s), np.asarray(x))


@needs_mpi
@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["nccl", "mpi", "any"])
def test_gpu_collectives_across_processes(backend, tmp_path):
    """One process per GPU (NCCL), or GPU arrays through host memory (MPI); several GPUs for NCCL. "any" with
    one rank more than there are GPUs: MPI moves them (NCCL refuses two ranks on one GPU)."""
    n = mx.device_count(mx.gpu)
    if backend == "nccl" and (n < 2 or not mx.distributed.is_available("nccl")):
        pytest.skip("needs NCCL and two GPUs")
    ranks = {"nccl": max(n, 2), "mpi": 2, "any": n + 1}[backend]
    job = _job(ranks, "tests/mpi_cases.py", "gpu", str(tmp_path),
               options=("--backend", backend) if backend != "any" else ())
    assert _passed(job)
