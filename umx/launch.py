"""``python -m umx.launch``: start a distributed umx program, one process per rank, through Open MPI's ``mpirun``.

Usage::

    python -m umx.launch -n 4 script.py [args]                 # 4 processes on this machine
    python -m umx.launch --hosts h1,h2 -n 2 script.py [args]   # 2 processes on each of h1 and h2
    python -m umx.launch --hostfile hosts.txt script.py        # lines 'host [slots=N]': N processes on each

Each process runs the script as ``__main__`` with, where there are GPUs, one of them visible
(``CUDA_VISIBLE_DEVICES``: its local rank's, taken from the GPUs visible to the launcher); ``--backend`` sets the
backend that ``mx.distributed.init()`` picks. Output lines are prefixed with their rank. When a rank fails (an
uncaught exception, a non-zero exit, a signal), the job is stopped: its traceback and a message name the rank,
the other ranks are ended by MPI, and the launcher exits with a non-zero status instead of hanging (a rank that
raised aborts MPI rather than waiting in ``MPI_Finalize`` for ranks that wait for it).
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import threading
import traceback

from .distributed._group import BACKEND_VARIABLE, BACKENDS

#: where a process finds its rank on this host (Open MPI, MPICH, Slurm)
_LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")
_TAG = re.compile(rb"^\[\d+,(\d+)\]<std(?:out|err)>: ?")  # Open MPI's --tag-output prefix
_STOP_GRACE_S = 10  # after Ctrl-C, how long mpirun may take to stop the ranks before it is killed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m umx.launch", description="Launch a distributed umx program "
                                "through Open MPI's mpirun, one process per rank.")
    p.add_argument("-n", "--repeat-hosts", dest="n", type=int, default=None,
                   help="processes per host (default 1, or the hostfile's slots)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--hosts", help="comma-separated hosts (default: this machine)")
    where.add_argument("--hostfile", help="a file of lines 'host [slots=N]' ('#' starts a comment)")
    p.add_argument("--backend", choices=BACKENDS[:3], default=None,
                   help="the backend mx.distributed.init() picks (default: any)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="set in every process")
    p.add_argument("--mpi-arg", action="append", default=[], help="an argument passed to mpirun as is")
    p.add_argument("--mpirun", default=None, help="the mpirun to use (default: the environment's, or PATH's)")
    p.add_argument("--python", default=sys.executable, help="the Python of the ranks (default: this one)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # what each rank runs
    p.add_argument("script", help="the Python script to run")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return p


def read_hostfile(path: str) -> list:
    """``[(host, slots or None)]`` from a hostfile of lines ``host [slots=N]``."""
    hosts = []
    with open(path) as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            slots = None
            for w in words[1:]:
                if w.startswith("slots="):
                    slots = int(w[len("slots="):])
            hosts.append((words[0], slots))
    if not hosts:
        raise ValueError(f"umx.launch: no hosts in {path}")
    return hosts


def mpirun_command(args, mpirun: str) -> tuple:
    """``(argv, environment)`` of the mpirun call for parsed ``args``."""
    if args.hostfile:
        hosts = [(h, args.n or slots or 1) for h, slots in read_hostfile(args.hostfile)]
    else:
        names = args.hosts.split(",") if args.hosts else ["localhost"]
        hosts = [(h.strip(), args.n or 1) for h in names if h.strip()]
    if any(k < 1 for _, k in hosts):
        raise ValueError("umx.launch: every host needs at least one process")
    total = sum(k for _, k in hosts)
    env = dict(os.environ)
    exported = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"umx.launch: --env takes KEY=VALUE, got {item!r}")
        exported[key] = value
    if args.backend:
        exported[BACKEND_VARIABLE] = args.backend
    local = {"localhost", "127.0.0.1", socket.gethostname()}
    if all(h in local for h, _ in hosts) and total > (os.cpu_count() or 1):
        # more ranks than cores: a rank waiting in MPI must yield its core to the ranks still computing
        exported.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    env.update(exported)
    cmd = [mpirun, "-n", str(total), "--host", ",".join(f"{h}:{k}" for h, k in hosts), "--bind-to", "none",
           "--tag-output"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")  # (containers run as root; Open MPI refuses that unless told)
    for key in sorted(exported.keys() | ({"PYTHONPATH"} & env.keys())):
        cmd += ["-x", key]  # (local ranks inherit the environment; remote ones get what is exported)
    cmd += args.mpi_arg
    cmd += [args.python, "-m", "umx.launch", "--worker", args.script, *args.args]
    return cmd, env


def _find_mpirun(given: str | None) -> str:
    if given:
        return given
    here = os.path.dirname(sys.executable)  # (a virtual environment's Open MPI wheel puts mpirun beside python)
    found = shutil.which("mpirun", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if found is None:
        raise FileNotFoundError("umx.launch: no mpirun found: pip install 'umx[distributed]' (Open MPI), or put "
                                "Open MPI's mpirun on PATH")
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" not in version:
        raise RuntimeError(f"umx.launch drives Open MPI's mpirun; {found} is {version.strip()[:60]!r}. Run your "
                           "MPI's launcher directly (e.g. mpiexec -n 4 python script.py)")
    return found


def _forward(pipe, out) -> None:
    """Copy mpirun's output lines to ``out``, Open MPI's rank tags rewritten as ``[rank] ``."""
    for line in iter(pipe.readline, b""):
        m = _TAG.match(line)
        if m is not None:
            if m.end() == len(line):
                continue  # (a tag alone, without text or newline, ends some ranks' output)
            line = b"[" + m.group(1) + b"] " + line[m.end():]
        out.write(line)
        out.flush()


def launch(argv: list) -> int:
    """Run the job described by ``argv`` (the launcher's arguments); its exit status."""
    args = _parser().parse_args(argv)
    if args.worker:
        return run_rank(args.script, args.args)
    try:
        cmd, env = mpirun_command(args, _find_mpirun(args.mpirun))
    except (OSError, ValueError, RuntimeError) as e:
        print(e, file=sys.stderr)
        return 2
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pumps = [threading.Thread(target=_forward, args=(proc.stdout, sys.stdout.buffer), daemon=True),
             threading.Thread(target=_forward, args=(proc.stderr, sys.stderr.buffer), daemon=True)]
    for t in pumps:
        t.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)  # mpirun passes it to the ranks and stops the job
        try:
            proc.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        code = 130
    for t in pumps:
        t.join()
    if code != 0:
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        print(f"umx.launch: the job failed ({how}); the other ranks were stopped", file=sys.stderr, flush=True)
    return code if code > 0 else 1 if code else 0


def _local_rank() -> int:
    for v in _LOCAL_RANK_VARIABLES:
        if v in os.environ:
            return int(os.environ[v])
    return 0


def _gpus() -> list:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES's entries, or the driver's devices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:  # no NVIDIA driver
        return []


def run_rank(script: str, script_args: list) -> int:
    """One rank: its GPU made the only visible one, then ``script`` run as ``__main__``. An uncaught exception
    or a non-zero exit aborts the whole job (MPI_Abort where MPI is initialized), never leaving the other ranks
    waiting."""

    gpus = _gpus()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[_local_rank() % len(gpus)]
    sys.argv = [script, *script_args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        if code:
            print(f"umx.launch: rank {_rank()} exited with status {code}: stopping the job", file=sys.stderr)
    except BaseException as e:  # noqa: BLE001 (any failure of the script stops the job, Ctrl-C included)
        traceback.print_exc()
        code = 130 if isinstance(e, KeyboardInterrupt) else 1
        print(f"umx.launch: rank {_rank()} raised {type(e).__name__}: stopping the job", file=sys.stderr)
    if code:
        _abort(code)
    return 0


def _rank() -> str:
    return os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "?"))


def _abort(code: int) -> None:
    """End this process with ``code`` at once, taking the job down with it."""
    sys.stdout.flush()
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.COMM_WORLD.Abort(code)
    os._exit(code)  # (MPI never started: mpirun sees the exit status and stops the others)


def main() -> None:
    sys.exit(launch(sys.argv[1:]))


if __name__ == "__main__":
    main()
