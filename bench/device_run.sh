#!/usr/bin/env bash
# One call on the GPU machine: the test suite, then the benchmarks, logs under $OUT (default ./out).
# Used as: bash bench/device_run.sh [core|first|check|models|decode|profile|kernels|eager|extras|ab|conformance|...]
#   (in the repository root, with CuPy, a GPU)
#   core (default): the test suite and the runtime's benchmarks; check: the suite without slow cases, the
#   three headline benchmarks (seed, overhead, latency), GPU reductions and whether the compiled decode step
#   replays as a graph; models: the 1.2B language model and training on the GPU; decode: the GPU tests of the
#   decode step's own kernels, their bandwidth (bench/matvec.py), then models' tables with one run each;
#   profile: those models' steps per primitive (bench/profile_ops.py); kernels: their CUDA kernels (CUPTI);
#   eager: eager decode, prompt and training steps' host phases and functions, then the bfloat16 LLM table;
#   extras: fast ops, optimizers, convolutions and MLX's own tests on the GPU (shared/ must be carried for
#   those). check, models and extras each fit one call's ten minutes.
#   ab: seed, latency and suite for an earlier tree carried as old/ and for this one, interleaved;
#   conformance: MLX's own tests on the GPU in eight parallel groups (carry shared/);
#   cpu: the CPU's cores alone: training steps against torch, each step's ops (bench/cpu_ops.py), chunk and block
#   sizes and products cut on the pool (bench/cpu_split.py), all in one call's ten minutes; cpu-why: why a CPU step's
#   ops run slower than alone (each op in the step and alone, the collector off, a shorter GIL interval, a pool
#   whose threads spin before they sleep);
#   verify: the suite without slow cases, then the headline tables (seed, training on the GPU, the bfloat16
#   language model, training on the CPU's cores) in one call, for the last check of a session; with
#   VERIFY_MLX_FILES=a.py,b.py (and shared/ carried) also those of MLX's tests on the GPU;
#   blas: whether BLAS products called from several threads run at once (bench/blas_threads.py), compiled regions
#   on Numba's threads (bench/cpu_jit.py --native), the CPU's steps with a chunk's product through ctypes
#   (bench/cpu_knobs.py), the CPU training table, then the suite;
#   jit: the suite, then the CPU's compiled regions (bench/cpu_jit.py: with them on and off, and the same loops
#   on Numba's own threads) and the CPU training table (Numba is on the GPU machine's image);
#   pairs: the suite with UMX_GRAPH_PAIRS=1, the bfloat16 decode with graph pairs on and off, its CUDA kernels,
#   the matvec's block shapes and the decode attention's chunks (bench/matvec.py --configs, --attention);
#   close: the suite, training on the GPU, the bfloat16 language model, the seed, then the MLP's and CNN's CPU
#   steps (on an H200: issue 20's table, bfloat16 and 4-bit over 256 tokens, and no CPU rows), in about six
#   minutes (a session's last check when device time is short);
#   measure: the suite, bench/grad_tapes.py, training on the GPU, the seed and the bfloat16 language model, in
#   one call's ten minutes; first: for a session that may get one call, the suite, training on the GPU, the
#   bfloat16 language model, the CPU routes of a batch norm's statistics (bench/reduce.py), the compiled LM
#   step's host phases, the MLP's and CNN's training steps on the CPU's cores against torch and the compiled LM's
#   CUDA kernels (CUPTI), in nine minutes at most; lean: the same tables after the tests of graphs, optimizers and training only; min:
#   the GPU tests of graphs and optimizers, then the LM's and MLP's eager steps (two minutes);
#   tapes: the suite, eager GPU training steps with backward tapes on, off, and on with the early start, in turns
#   (bench/grad_tapes.py),
#   the training table and the eager LM's and CNN's host phases;
#   early: the GPU training steps with value_and_grad's early start (on by default) on and off in turn, then the
#   tests of transforms, graphs, optimizers and examples;
#   host: the tests near graphs, training on the GPU, the bfloat16 language model, then the host's time per phase
#   and function of the compiled LM and decode steps and the eager MLP step;
#   sides: the suite, then training on the GPU (and with fused side outputs off, then products' read-through of
#   transposes off), the bfloat16 language model,
#   the compiled LM step's host phases and CUDA kernels;
#   dist: the distributed tests, all_sum against mpi4py (and NCCL with several GPUs), the held input taken apart;
#   scale: convolutions and the MLP's and CNN's CPU steps on one core (taskset) and on all, the steps under each
#   setting of the CPU backend's knobs (bench/cpu_knobs.py), the routes of a batch norm's statistics
#   (bench/reduce.py), then the pool's hand-offs and chunk sizes (bench/cpu_split.py).
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# run_tests SECONDS [PATH...]: the tests but the slow ones (default: all of tests/) on 14 workers where pytest-xdist
# is there, then the exit code, pytest's last line and the failures
run_tests() {
  local limit=$1; shift
  local xdist; xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n 14")
  timeout "$limit" python3 -m pytest -rfE -p no:cacheprovider -o faulthandler_timeout=100 $xdist -m "not slow" \
    "${@:-tests}" > "$OUT/pytest.log" 2>&1
  echo "pytest exit $?"; tail -2 "$OUT/pytest.log"; grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | cut -c1-230 | head -70
}
# eager_tables REPEATS: bench/grad_tapes.py's eager steps (tapes on, off, the early start, the update as written)
# and the GPU's training table, medians of REPEATS steps
eager_tables() {
  timeout $((4 * $1 + 30)) python3 bench/grad_tapes.py --devices gpu --repeats "$1" 2>&1 | tee "$OUT/grad_tapes.log" \
    | tail -5
  timeout $((3 * $1 + 50)) python3 bench/train.py --devices gpu --no-torch-compile --repeats "$1" --graph-stats 2>&1 \
    | tee "$OUT/train.log" | tail -7
}
if [ "${1:-core}" = models ]; then  # (llm.py prints each row as its column finishes: a cut run keeps them)
  # (three runs: "again" is then a replay of the prompt's graph, not its capture)
  timeout 360 python3 bench/llm.py --runs 3 --gen 128 2>&1 | tee "$OUT/llm.log" | tail -16
  timeout 200 python3 bench/train.py --devices gpu 2>&1 | tee "$OUT/train.log" | tail -8
  exit 0
fi
if [ "${1:-core}" = decode ]; then  # the decode kernels' GPU tests, their bandwidth, the models' tables, in one call
  nvidia-smi --query-gpu=name --format=csv,noheader
  timeout 90 python3 -m pytest -q -p no:cacheprovider -n 8 -W ignore tests/test_quantized.py tests/test_cuda.py \
    tests/test_graphs.py tests/test_nn_layers.py tests/test_transforms_api.py > "$OUT/pytest-decode.log" 2>&1
  echo "pytest exit $?"; tail -1 "$OUT/pytest-decode.log"; grep -E "^(FAILED|ERROR)" "$OUT/pytest-decode.log" | head -20
  timeout 60 python3 bench/matvec.py 2>&1 | tee "$OUT/matvec.log" | tail -13
  timeout 180 python3 bench/llm.py --runs 1 2>&1 | tee "$OUT/llm.log" | tail -12
  timeout 150 python3 bench/train.py --devices gpu 2>&1 | tee "$OUT/train.log" | tail -6
  exit 0
fi
if [ "${1:-core}" = profile ]; then  # where a step's GPU time goes, per primitive (eager, then compiled)
  timeout 200 python3 bench/profile_ops.py --cases decode,lm,cnn,mlp --steps 3 --ops 12 --graphs 2>&1 | tee "$OUT/profile.log"
  timeout 150 python3 bench/profile_ops.py --cases decode,lm,cnn --steps 3 --compiled --ops 12 --graphs 2>&1 | tee -a "$OUT/profile.log"
  exit 0
fi
if [ "${1:-core}" = kernels ]; then  # CUDA kernels per step as CUPTI sees them, umx's and torch's
  { timeout 240 python3 bench/profile_ops.py --cases decode,lm,cnn --compiled --steps 3 --kernels 25 --torch --host 20
    timeout 120 python3 bench/profile_ops.py --cases prompt --steps 2 --kernels 25 --phases
    timeout 120 python3 bench/profile_ops.py --cases prompt --steps 2 --no-graphs --phases --host 25; } \
    2>&1 | tee "$OUT/kernels.log" | grep -vE "^\| (kernel|---)" | cut -c1-150 | head -150
  exit 0
fi
if [ "${1:-core}" = eager ]; then  # where eager steps spend the host's time (op by op: graphs off for the LLM)
  timeout 120 python3 bench/profile_ops.py --cases decode,prompt --steps 3 --no-graphs --phases --host 25 \
    > "$OUT/eager.log" 2>&1
  grep -E "^## |eval \(all|op by op|plan \(" "$OUT/eager.log"
  timeout 90 python3 bench/profile_ops.py --cases lm,mlp --steps 3 --graphs --phases > "$OUT/train-eager.log" 2>&1
  grep -E -A6 "^(## |batches|umx .* host phases)" "$OUT/train-eager.log" | grep -vE "^\| (primitive|---|phase)" | head -40
  timeout 240 python3 bench/llm.py --runs 3 --gen 128 --dtypes bfloat16 --columns umx,umx-compiled,torch 2>&1 | tail -5
  exit 0
fi
if [ "${1:-core}" = cpu ]; then  # the GPU machine's cores: where a CPU step's time goes, and the pool's sizes
  nproc
  timeout 100 python3 bench/train.py --devices cpu --repeats 5 --no-torch-compile 2>&1 | tee "$OUT/train-cpu.log" \
    | tail -4
  timeout 150 python3 bench/cpu_ops.py --top 25 2>&1 | tee "$OUT/cpu-ops.log"
  timeout 240 python3 bench/cpu_split.py --runs 7 2>&1 | tee "$OUT/cpu-split.log" | tail -40
  exit 0
fi
if [ "${1:-core}" = scale ]; then  # how the CPU's kernels scale: one core (taskset) against all, per layer and step
  nproc
  for cores in one all; do
    pre=""; extra=""
    if [ $cores = one ]; then pre="taskset -c 0"; extra="--one-core"; fi
    echo "== $cores"
    timeout 150 $pre python3 bench/conv.py --devices cpu --runs 3 $extra 2>&1 | grep -E "^conv"
    timeout 90 $pre python3 bench/train.py --devices cpu --cases mlp,cnn --repeats 3 --no-torch-compile 2>&1 \
      | grep -E "^(MLP|CNN)"
  done
  timeout 150 python3 bench/cpu_knobs.py 2>&1 | tee "$OUT/cpu-knobs.log"
  timeout 60 python3 bench/reduce.py --runs 9 2>&1 | tee "$OUT/reduce.log" | head -24
  timeout 150 python3 bench/cpu_split.py --runs 5 2>&1 | tee "$OUT/cpu-split.log" | tail -40
  exit 0
fi
if [ "${1:-core}" = early ]; then  # value_and_grad's early start, on and off in turn, then the tests near it
  nvidia-smi --query-gpu=name --format=csv,noheader
  for e in 1 0 1 0; do echo "== UMX_EARLY_START=$e"
    UMX_EARLY_START=$e timeout 70 python3 bench/train.py --devices gpu --no-torch-compile --repeats 11 2>&1 \
      | grep -E "^(MLP|LM|CNN)" | tee -a "$OUT/early.log"
  done
  timeout 90 python3 -m pytest -q -p no:cacheprovider -n 14 -W ignore tests/test_transforms_api.py \
    tests/test_graphs.py tests/test_optimizers.py tests/test_training_paths.py tests/test_examples.py 2>&1 | tail -3
  exit 0
fi
if [ "${1:-core}" = cpu-why ]; then  # on the 16 cores: ops in a step against the same ops alone, and three suspects
  nproc
  timeout 150 python3 bench/cpu_ops.py --cases cnn,mlp --top 16 --alone 10 --threads 2>&1 | tee "$OUT/cpu-alone.log" | cut -c1-150
  echo "== the collector off"; timeout 60 python3 bench/cpu_ops.py --cases cnn --top 6 --no-gc 2>&1 | tail -8 | cut -c1-150
  echo "== GIL interval 0.2 ms"
  timeout 60 python3 bench/cpu_ops.py --cases cnn --top 6 --switch-interval 0.0002 2>&1 | tail -8 | cut -c1-150
  timeout 120 python3 bench/cpu_pool.py 2>&1 | tee "$OUT/cpu-pool.log"
  exit 0
fi
if [ "${1:-core}" = dist ]; then
  nproc
  timeout 200 python3 -m pytest -q -p no:cacheprovider -W ignore tests/test_distributed.py tests/test_nn_distributed.py \
    2>&1 | tail -3
  timeout 200 python3 bench/distributed.py --quick 2>&1 | tee "$OUT/distributed.log"
  timeout 120 python3 bench/distributed.py --parts --quick 2>&1 | tee "$OUT/distributed-parts.log"
  exit 0
fi
if [ "${1:-core}" = verify ]; then
  nvidia-smi --query-gpu=name --format=csv,noheader
  run_tests 200
  timeout 40 python3 bench/seed.py --runs 5 2>&1 | tee "$OUT/seed.log" | grep -E "^(placement|gpu/gpu|cpu/gpu)"
  timeout 150 python3 bench/train.py --devices gpu 2>&1 | tee "$OUT/train.log" | tail -4
  timeout 150 python3 bench/llm.py --runs 3 --gen 128 --dtypes bfloat16 2>&1 | tee "$OUT/llm.log" | tail -5
  timeout 80 python3 bench/train.py --devices cpu --repeats 5 --no-torch-compile 2>&1 | tee "$OUT/train-cpu.log" \
    | tail -4
  if [ -n "${VERIFY_MLX_FILES:-}" ] && [ -f shared/tools/mlx_conformance.py ]; then  # (carry shared/)
    timeout 120 python3 shared/tools/mlx_conformance.py --device gpu --timeout 100 --show --files "$VERIFY_MLX_FILES" \
      2>&1 | tee "$OUT/conformance.log" | grep -E "^test_|FAIL|Error" | head -20
  fi
  exit 0
fi
if [ "${1:-core}" = close ]; then  # a session's last check, in about six minutes: verify's tables without
  # torch.compile, the CPU's rows last (a call cut short loses those first)
  nvidia-smi --query-gpu=name --format=csv,noheader
  run_tests 200
  timeout 80 python3 bench/train.py --devices gpu --no-torch-compile --repeats 21 --graph-stats 2>&1 \
    | tee "$OUT/train.log" | tail -7
  if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then  # (issue 20's table: both rows)
    timeout 230 python3 bench/llm.py --runs 3 2>&1 | tee "$OUT/llm.log" | tail -10
    timeout 40 python3 bench/seed.py --runs 5 2>&1 | tee "$OUT/seed.log" | grep -E "^(placement|gpu/gpu|cpu/gpu)"
    exit 0
  fi
  timeout 120 python3 bench/llm.py --runs 3 --gen 128 --dtypes bfloat16 2>&1 | tee "$OUT/llm.log" | tail -5
  timeout 40 python3 bench/seed.py --runs 5 2>&1 | tee "$OUT/seed.log" | grep -E "^(placement|gpu/gpu|cpu/gpu)"
  timeout 80 python3 bench/train.py --devices cpu --cases mlp,cnn --repeats 5 --no-torch-compile 2>&1 \
    | tee "$OUT/train-cpu.log" | tail -3
  exit 0
fi
if [ "${1:-core}" = blas ]; then  # whether BLAS products from several threads run at once (NumPy's calls and
  # gemm through ctypes), compiled regions on Numba's threads, the CPU steps with a chunk's product through ctypes,
  # torch's CPU steps, then the suite
  nvidia-smi --query-gpu=name --format=csv,noheader; nproc
  timeout 60 python3 bench/blas_threads.py 2>&1 | tee "$OUT/blas-threads.log"
  timeout 130 python3 bench/cpu_jit.py --repeats 5 --native 2>&1 | tee "$OUT/cpu-jit.log" | tail -12
  timeout 120 python3 bench/cpu_knobs.py --settings base,gemm-ctypes,gemm-ctypes-pool --repeats 7 2>&1 \
    | tee "$OUT/cpu-knobs.log"
  timeout 80 python3 bench/train.py --devices cpu --cases mlp,cnn --repeats 5 --no-torch-compile 2>&1 \
    | tee "$OUT/train-cpu.log" | tail -3
  run_tests 170
  exit 0
fi
if [ "${1:-core}" = jit ]; then  # the CPU's compiled regions (Numba) on the machine's cores, after the GPU suite
  nvidia-smi --query-gpu=name --format=csv,noheader; nproc
  python3 -c "import numba; print('numba', numba.__version__)" || echo "numba: not importable"
  run_tests 180
  timeout 150 python3 bench/cpu_jit.py --repeats 7 --native 2>&1 | tee "$OUT/cpu-jit.log" | tail -24
  timeout 90 python3 bench/train.py --devices cpu --cases mlp,cnn --repeats 5 --no-torch-compile 2>&1 \
    | tee "$OUT/train-cpu.log" | tail -3
  exit 0
fi
if [ "${1:-core}" = pairs ]; then  # graph pairs (UMX_GRAPH_PAIRS=1) under the whole suite, then the decode with
  # them on and off, its kernels, the bfloat16 matvec's block shapes and the decode attention's chunks
  nvidia-smi --query-gpu=name --format=csv,noheader
  export UMX_GRAPH_PAIRS=1
  run_tests 200
  timeout 120 python3 bench/llm.py --runs 3 --dtypes bfloat16 2>&1 | tee "$OUT/llm.log" | tail -6
  UMX_GRAPH_PAIRS=0 timeout 60 python3 bench/llm.py --runs 2 --dtypes bfloat16 --columns umx-compiled 2>&1 | tail -2
  timeout 60 python3 bench/profile_ops.py --cases decode --compiled --steps 3 --kernels 25 2>&1 \
    | tee "$OUT/kernels.log" | tail -34
  timeout 50 python3 bench/matvec.py --configs 2>&1 | tail -8
  timeout 60 python3 bench/matvec.py --attention 2>&1 | tail -7
  exit 0
fi
if [ "${1:-core}" = measure ]; then  # one call: the suite, eager steps' A/B, training, the LLM, the seed
  nvidia-smi --query-gpu=name --format=csv,noheader
  run_tests 200
  eager_tables 21
  timeout 30 python3 bench/seed.py --runs 5 2>&1 | tee "$OUT/seed.log" | grep -E "^(placement|gpu/gpu|cpu/gpu)"
  timeout 140 python3 bench/llm.py --runs 3 --gen 128 --dtypes bfloat16 2>&1 | tee "$OUT/llm.log" | tail -5
  exit 0
fi
if [ "${1:-core}" = first ]; then  # a session's one call when machines are scarce: GPU, then the CPU's questions
  nvidia-smi --query-gpu=name --format=csv,noheader
  run_tests 180
  timeout 70 python3 bench/train.py --devices gpu --no-torch-compile --repeats 21 --graph-stats 2>&1 \
    | tee "$OUT/train.log" | tail -7
  timeout 100 python3 bench/llm.py --runs 3 --gen 128 --dtypes bfloat16 2>&1 | tee "$OUT/llm.log" | tail -5
  timeout 25 python3 bench/reduce.py --runs 3 2>&1 | tee "$OUT/reduce.log" | head -40
  timeout 40 python3 bench/profile_ops.py --cases lm --compiled --steps 5 --phases --host 25 2>&1 \
    | tee "$OUT/compiled-host.log" | grep -A40 "host phases"
  timeout 40 python3 bench/profile_ops.py --cases lm --steps 5 --phases 2>&1 | tee "$OUT/eager-host.log" \
    | grep -A14 "host phases"
  timeout 100 python3 bench/train.py --devices cpu --cases mlp,cnn --no-torch-compile --repeats 5 2>&1 \
    | tee "$OUT/train-cpu.log" | tail -4
  timeout 45 python3 bench/profile_ops.py --cases lm --compiled --steps 3 --kernels 30 2>&1 | tee "$OUT/kernels.log" \
    | grep -vE "^\| (kernel|---)" | cut -c1-150 | tail -34
  exit 0
fi
if [ "${1:-core}" = host ]; then  # the GPU tests near graphs, the tables, then where compiled and eager steps
  # spend the host's time (clocks per phase and cProfile): the compiled LM and decode steps, the eager MLP
  nvidia-smi --query-gpu=name --format=csv,noheader
  timeout 120 python3 -m pytest -q -p no:cacheprovider -n 14 -W ignore tests/test_graphs.py tests/test_optimizers.py \
    tests/test_fusion.py tests/test_training_paths.py tests/test_examples.py tests/test_cuda.py 2>&1 | tail -3
  timeout 80 python3 bench/train.py --devices gpu --no-torch-compile --repeats 21 --graph-stats 2>&1 \
    | tee "$OUT/train.log" | tail -7
  timeout 100 python3 bench/llm.py --runs 3 --gen 128 --dtypes bfloat16 2>&1 | tee "$OUT/llm.log" | tail -5
  for c in "lm --compiled" "decode --compiled" "mlp"; do
    log="$OUT/host-${c%% *}.log"
    timeout 60 python3 bench/profile_ops.py --cases $c --steps 10 --graphs --phases --host 30 > "$log" 2>&1
    grep -A17 "host phases" "$log" | grep -vE "^\| (phase|---)"
    grep -A14 "of host time a step" "$log" | grep -vE "^\| (function|---)" | cut -c1-110
  done
  timeout 60 python3 bench/profile_ops.py --cases decode --compiled --steps 3 --kernels 30 > "$OUT/kernels.log" 2>&1
  grep -A32 "of device work" "$OUT/kernels.log" | grep -vE "^\| (kernel|---)" | cut -c1-120
  exit 0
fi
if [ "${1:-core}" = sides ]; then  # the suite, then the GPU tables with fused side outputs on and off
  nvidia-smi --query-gpu=name --format=csv,noheader
  run_tests 180
  timeout 70 python3 bench/train.py --devices gpu --no-torch-compile --repeats 21 --graph-stats 2>&1 \
    | tee "$OUT/train.log" | tail -7
  for off in UMX_SIDE_OUTPUTS UMX_READ_TRANSPOSES; do echo "== $off=0"
    env $off=0 timeout 50 python3 bench/train.py --devices gpu --cases lm,cnn --no-torch-compile --repeats 21 \
      2>&1 | tee "$OUT/train-$off.log" | tail -2
  done
  timeout 100 python3 bench/llm.py --runs 3 --gen 128 --dtypes bfloat16 2>&1 | tee "$OUT/llm.log" | tail -5
  timeout 40 python3 bench/profile_ops.py --cases lm --compiled --steps 5 --phases 2>&1 | tee "$OUT/compiled-host.log" \
    | grep -A14 "host phases"
  timeout 45 python3 bench/profile_ops.py --cases lm --compiled --steps 3 --kernels 30 2>&1 | tee "$OUT/kernels.log" \
    | grep -vE "^\| (kernel|---)" | cut -c1-150 | tail -34
  exit 0
fi
if [ "${1:-core}" = min ]; then  # the least check of graphs and compiled updates, then the LM's eager step A/B
  nvidia-smi --query-gpu=name --format=csv,noheader
  timeout 70 python3 -m pytest -rfE -p no:cacheprovider -n 8 -q tests/test_graphs.py tests/test_optimizers.py \
    -k "gpu or graphs or replay or batch or captur" > "$OUT/pytest.log" 2>&1
  echo "pytest exit $?"; tail -1 "$OUT/pytest.log"; grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | cut -c1-230 | head -20
  timeout 60 python3 bench/grad_tapes.py --devices gpu --repeats 9 --cases lm,mlp 2>&1 | tee "$OUT/grad_tapes.log" \
    | tail -3
  exit 0
fi
if [ "${1:-core}" = lean ]; then  # measure's tables after the tests of graphs, optimizers and training only
  nvidia-smi --query-gpu=name --format=csv,noheader
  run_tests 120 tests/test_graphs.py tests/test_optimizers.py tests/test_training_paths.py tests/test_grad_tapes.py \
    tests/test_examples.py
  eager_tables 15
  timeout 30 python3 bench/seed.py --runs 5 2>&1 | tee "$OUT/seed.log" | grep -E "^(placement|gpu/gpu|cpu/gpu)"
  exit 0
fi
if [ "${1:-core}" = tapes ]; then  # backward tapes: the suite, eager steps with tapes on and off, the host's phases
  nvidia-smi --query-gpu=name --format=csv,noheader
  run_tests 200
  eager_tables 41
  timeout 100 python3 bench/profile_ops.py --cases lm,cnn --steps 3 --graphs --phases > "$OUT/phases.log" 2>&1
  grep -E -A9 "host phases" "$OUT/phases.log" | grep -vE "^\| (phase|---)" | head -30
  exit 0
fi
if [ "${1:-core}" = ab ]; then  # old/ (an earlier tree, carried) against this one: seed, latency, suite, interleaved
  O=$(cd "$OUT" && pwd)
  for round in $(seq 1 "${AB_ROUNDS:-2}"); do for tree in old .; do
    tag=$([ "$tree" = old ] && echo before || echo after)
    ( cd "$tree" && timeout 60 python3 bench/seed.py --runs 10 > "$O/ab-seed-$tag-$round.log" 2>&1
      timeout 60 python3 bench/latency.py --rounds 3 --calls 1000 > "$O/ab-latency-$tag-$round.log" 2>&1
      timeout 90 python3 bench/suite.py --quick > "$O/ab-suite-$tag-$round.log" 2>&1 )
    echo "round $round $tag done $(date +%T)"
  done; done
  exit 0
fi
if [ "${1:-core}" = conformance ]; then  # MLX's own tests on the GPU, files spread over parallel groups
  F=$(sed -n '/^BASELINE = {/,/^}/p' shared/tools/mlx_conformance.py | grep -oE '"test_[a-z_0-9]+\.py"' | tr -d '"')
  i=0; for f in $F; do echo "$f" >> "$OUT/group$((i % 8))"; i=$((i + 1)); done
  for g in "$OUT"/group[0-7]; do
    timeout 400 python3 shared/tools/mlx_conformance.py --device gpu --timeout 300 --show \
      --files "$(paste -sd, "$g")" > "$g.log" 2>&1 &
  done; wait
  grep -hE "^test_" "$OUT"/group*.log | sort
  exit 0
fi
if [ "${1:-core}" = extras ]; then
  timeout 90 python3 bench/fast.py 2>&1 | tee "$OUT/fast.log" | tail -16
  timeout 60 python3 bench/optimizers.py 2>&1 | tee "$OUT/optimizers.log" | tail -16
  timeout 120 python3 bench/conv.py --runs 3 2>&1 | tee "$OUT/conv.log" | tail -18
  if [ -f shared/tools/mlx_conformance.py ]; then
    timeout 300 python3 shared/tools/mlx_conformance.py --device gpu --timeout 120 2>&1 \
      | tee "$OUT/conformance-gpu.log" | tail -40
  fi
  exit 0
fi
if [ "${1:-core}" = check ]; then
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
  run_tests 300
  timeout 90 python3 bench/seed.py --runs 10 2>&1 | tee "$OUT/seed.log" | tail -22
  timeout 50 python3 bench/overhead.py 2>&1 | tee "$OUT/overhead.log" | tail -8
  timeout 80 python3 bench/latency.py 2>&1 | tee "$OUT/latency.log" | tail -12
  timeout 40 python3 bench/reduce.py --runs 7 2>&1 | tee "$OUT/reduce.log" | tail -9
  # whether the compiled decode step replays as a CUDA graph, and its time (the full tables: profile, models)
  timeout 90 python3 bench/profile_ops.py --cases decode --compiled --steps 3 --ops 8 --graphs > "$OUT/decode.log" 2>&1
  grep -E -A4 "^(## |batches)" "$OUT/decode.log" | grep -vE "^\| (primitive|---)" | head -12
  exit 0
fi
python3 -c "import cupy, numpy, sys; print('python', sys.version.split()[0], 'cupy', cupy.__version__, 'numpy', numpy.__version__)"
python3 -c "
import numpy as np, cupy as cp
from umx.backends.cuda import memory as g
a = g.pinned_empty((4,), np.float32); print('pinned_empty is_pinned:', g.is_pinned(a), g.is_pinned(np.zeros(4)))"
# pytest-xdist, where installed, spreads the suite over the cores (GPU tests compile many small kernels)
XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 12")
timeout ${TEST_TIMEOUT:-330} python3 -m pytest -rf -p no:cacheprovider $XDIST tests > "$OUT/pytest.log" 2>&1
echo "pytest exit $?"; grep -E "passed|failed|error" "$OUT/pytest.log" | tail -1
grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -30
timeout 120 python3 bench/seed.py --runs 20 2>&1 | tee "$OUT/seed.log" | tail -25
timeout 60 python3 bench/transfer.py 2>&1 | tee "$OUT/transfer.log" | tail -14
timeout 60 python3 bench/overhead.py 2>&1 | tee "$OUT/overhead.log" | tail -8
timeout 150 python3 bench/suite.py 2>&1 | tee "$OUT/suite.log" | tail -24
timeout 120 python3 bench/latency.py 2>&1 | tee "$OUT/latency.log" | tail -12
timeout 90 python3 bench/graphs.py 2>&1 | tee "$OUT/graphs.log" | tail -6
timeout 60 python3 bench/compile.py 2>&1 | tee "$OUT/compile.log" | tail -14
timeout 60 python3 bench/reduce.py 2>&1 | tee "$OUT/reduce.log" | tail -8
timeout 240 python3 bench/conv.py --runs 5 2>&1 | tee "$OUT/conv.log" | tail -18
for p in "gpu gpu" "gpu cpu"; do set -- $p
  timeout 60 python3 bench/trace_seed.py --d1 $1 --d2 $2 -o "$OUT/trace-seed-$1-$2.png" > /dev/null 2>&1 || echo "trace $1/$2 failed"
done
ls "$OUT"
