"""all_sum bandwidth against message size: umx's MPI backend on the CPU against mpi4py's own ``Allreduce`` on
NumPy buffers, in one job of 2 processes; and, where there are several GPUs with NCCL, umx's NCCL backend (one
process per GPU) against torch.distributed's NCCL ``all_reduce``.

Each size (float32, 4 KiB to 256 MiB) is timed as the median of interleaved rounds (``_util.interleaved_medians``:
every rank makes the same calls in the same order, so the collectives pair up), each call timed from the exit of
a barrier (untimed), so that a rank's time is the collective's, not its wait for the other rank to finish the call
before. umx's call is ``eval`` of a fresh
``all_sum`` node (building the node, planning it, running it on the stream's worker); bandwidth is bytes per
second of one rank's buffer. Rank 0 prints the table. On the CPU, umx is timed twice: with an input the caller
still holds (MPI reduces into a copy of it), and with an input nothing else holds, as a training step's gradients
are (MPI reduces in that input's own buffer: ``backends/cpu/donate.py``); each call's result is the next one's
input there. mpi4py's call reduces a send buffer into a receive buffer, both kept from call to call.

With ``--parts``, the held input's call taken apart instead (MPI, 2 processes, 1 to 16 MiB): mpi4py's call; MPI
reducing in place alone; a copy then an in-place reduce, into one kept buffer and into a fresh one (umx's
strategy); umx's call; and the eval of a 4-element CPU add (umx's cost per eval on the host), each timed from a
barrier's exit as above; then rank 0's eval of that add alone, its median and its profile.

Usage: python bench/distributed.py [--quick] [--parts]        (starts its own jobs through umx.launch)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from _util import interleaved_medians, median_time  # noqa: E402

import umx as mx  # noqa: E402

SIZES = [4 << 10 << (2 * i) for i in range(8)]  # 4 KiB, 16 KiB, ..., 64 MiB; 256 MiB added below
TARGET = 0.9  # umx's bandwidth over the baseline's, from 1 MiB up


def _repeats(nbytes: int, quick: bool) -> int:
    if nbytes >= 64 << 20:
        return 3 if quick else 5
    return 10 if quick else 30


def _row(nbytes: int, t_umx: float, t_base: float, t_donated: float | None = None) -> str:
    size = f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"
    ratio = t_base / t_umx
    flag = "" if nbytes < 1 << 20 or ratio >= TARGET else f"  (below the {TARGET}x target)"
    donated = "" if t_donated is None else (f"  {t_donated * 1e3:9.3f}ms {nbytes / t_donated / 1e9:7.2f} GB/s "
                                            f"{t_base / t_donated:5.2f}")
    return (f"{size:>8}  {t_umx * 1e3:9.3f}ms {nbytes / t_umx / 1e9:7.2f} GB/s  {t_base * 1e3:9.3f}ms "
            f"{nbytes / t_base / 1e9:7.2f} GB/s  {ratio:5.2f}{donated}{flag}")


def _header(title: str, base: str, donated: bool = False) -> str:
    extra = f"  {'umx, donated':>11} {'':>12} ratio" if donated else ""
    return (f"{title}\n{'size':>8}  {'umx':>11} {'':>12}  {base:>11} {'':>12}  ratio (bandwidth, umx/{base})"
            f"{extra}\n" + "-" * (80 + len(extra)))


def run_mpi(quick: bool) -> None:
    """In a job: umx's all_sum (CPU) against mpi4py's Allreduce."""
    from mpi4py import MPI

    world = mx.distributed.init(strict=True)
    comm = MPI.COMM_WORLD.Dup()
    rows = []
    for nbytes in SIZES + ([] if quick else [256 << 20]):
        n = nbytes // 4
        x = mx.ones((n,), stream=mx.cpu)
        mx.eval(x)
        send = np.ones(n, np.float32)
        recv = np.empty_like(send)

        def umx_call(x=x):
            mx.eval(mx.distributed.all_sum(x, stream=mx.cpu))

        # (real values, not zeros: each call multiplies them by about the group's size, and the few dozen calls
        # of a size stay far from float32's range at the group sizes timed)
        state = [mx.random.normal((n,), scale=1e-6, stream=mx.cpu)]
        mx.eval(state[0])

        def donated_call(state=state):  # (the input is the last call's result, which nothing else holds)
            y = mx.distributed.all_sum(state.pop(), stream=mx.cpu)
            mx.eval(y)
            state.append(y)

        def mpi_call(send=send, recv=recv):
            comm.Allreduce(send, recv, op=MPI.SUM)

        times = interleaved_medians({"umx": umx_call, "donated": donated_call, "mpi4py": mpi_call},
                                    repeats=_repeats(nbytes, quick), before=comm.Barrier)
        rows.append(_row(nbytes, times["umx"], times["mpi4py"], times["donated"]))
    if world.rank() == 0:
        print(_header(f"all_sum, float32, MPI on the CPU, {world.size()} processes", "mpi4py", donated=True))
        print("\n".join(rows), flush=True)


def run_parts(quick: bool) -> None:
    """In a job: the held input's all_sum taken apart (see the module's docstring)."""
    from mpi4py import MPI

    world = mx.distributed.init(strict=True, backend="mpi")
    comm = MPI.COMM_WORLD.Dup()
    lines = []
    for nbytes in (1 << 20, 4 << 20, 16 << 20):
        size = f"{nbytes >> 20} MiB"
        times = _parts(MPI, comm, nbytes, _repeats(nbytes, quick) + (10 if nbytes < 16 << 20 else 0))
        lines += [f"{size:>8}  {k:34s} {t * 1e6:9.1f} us" for k, t in times.items()] + [""]
    if world.rank() == 0:
        print(f"the held input's all_sum taken apart, float32, MPI on the CPU, {world.size()} processes "
              "(medians; each call timed from a barrier's exit)")
        print("\n".join(lines), flush=True)
        _profile_small_eval()


def _profile_small_eval(calls: int = 2000) -> None:
    """Where rank 0's eval of a 4-element CPU add spends its time: the median call, then cProfile's heaviest
    functions (its own cost inflates each call: compare functions with each other, not with the median)."""
    import cProfile
    import pstats

    small = mx.ones((4,), stream=mx.cpu)
    mx.eval(small)
    t = median_time(lambda: mx.eval(mx.add(small, 1, stream=mx.cpu)), calls, 200)
    print(f"rank 0 alone: eval of a 4-element add, median of {calls}: {t * 1e6:.1f} us")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        mx.eval(mx.add(small, 1, stream=mx.cpu))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


def _parts(MPI, comm, nbytes: int, repeats: int) -> dict:  # noqa: N803 (mpi4py's module name)
    """``{part: median seconds}`` of the held input's all_sum at ``nbytes``, each call timed from a barrier's
    exit."""
    n = nbytes // 4
    send, recv, kept = (np.ones(n, np.float32) for _ in range(3))
    x, small = mx.ones((n,), stream=mx.cpu), mx.ones((4,), stream=mx.cpu)
    mx.eval(x, small)

    def in_place(buf):
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def copied_into_kept():
        np.copyto(kept, send)
        in_place(kept)

    calls = {
        "mpi4py, send to receive": lambda: comm.Allreduce(send, recv, op=MPI.SUM),
        "in place alone": lambda: in_place(kept),
        "copy to a kept buffer, in place": copied_into_kept,
        "copy to a fresh buffer, in place": lambda: in_place(send.copy()),
        "umx all_sum, held input": lambda: mx.eval(mx.distributed.all_sum(x, stream=mx.cpu)),
        "umx eval of a 4-element add": lambda: mx.eval(mx.add(small, 1, stream=mx.cpu)),
    }
    return interleaved_medians(calls, repeats=repeats, before=comm.Barrier)


def run_nccl(quick: bool) -> None:
    """In a job of one process per GPU: umx's all_sum (NCCL) against torch.distributed's NCCL all_reduce."""
    import torch
    import torch.distributed as dist
    from mpi4py import MPI

    world = mx.distributed.init(strict=True, backend="nccl")
    comm = MPI.COMM_WORLD.Dup()
    port = comm.bcast(29500 + os.getpid() % 1000 if world.rank() == 0 else None)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=world.rank(),
                            world_size=world.size())
    torch.cuda.set_device(0)  # (each process sees its own GPU only)
    rows = []
    for nbytes in SIZES + ([] if quick else [256 << 20]):
        n = nbytes // 4
        x = mx.ones((n,), stream=mx.gpu)
        mx.eval(x)
        t = torch.ones(n, device="cuda")

        def umx_call(x=x):
            mx.eval(mx.distributed.all_sum(x, stream=mx.gpu))  # (eval waits for the GPU's work)

        def torch_call(t=t):
            dist.all_reduce(t)
            torch.cuda.synchronize()

        times = interleaved_medians({"umx": umx_call, "torch": torch_call}, repeats=_repeats(nbytes, quick),
                                    before=comm.Barrier)
        rows.append(_row(nbytes, times["umx"], times["torch"]))
    if world.rank() == 0:
        print(_header(f"all_sum, float32, NCCL, {world.size()} GPUs", "torch"))
        print("\n".join(rows), flush=True)
    dist.destroy_process_group()


def _launch(n: int, what: str, quick: bool, backend: str) -> int:
    cmd = [sys.executable, "-m", "umx.launch", "-n", str(n), "--backend", backend, os.path.abspath(__file__),
           "--in-job", what] + (["--quick"] if quick else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.abspath(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(cmd, env=env).returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, up to 64 MiB")
    ap.add_argument("--parts", action="store_true", help="the held input's call taken apart (MPI, 2 processes)")
    ap.add_argument("--in-job", choices=("mpi", "nccl", "parts"), help=argparse.SUPPRESS)  # what a rank runs
    args = ap.parse_args()
    if args.in_job == "mpi":
        return run_mpi(args.quick)
    if args.in_job == "parts":
        return run_parts(args.quick)
    if args.parts:
        sys.exit(_launch(2, "parts", args.quick, "mpi"))
    if args.in_job == "nccl":
        return run_nccl(args.quick)
    code = _launch(2, "mpi", args.quick, "mpi")
    gpus = mx.device_count(mx.gpu)
    if gpus >= 2 and mx.distributed.is_available("nccl"):
        print()
        code = code or _launch(gpus, "nccl", args.quick, "nccl")
    else:
        print("\n(NCCL: skipped, it needs NCCL and at least two GPUs)")
    sys.exit(code)


if __name__ == "__main__":
    main()
