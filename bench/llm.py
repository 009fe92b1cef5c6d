"""Language-model inference, one table: prompt and generation speed and peak memory of a Llama-architecture model.

Columns: umx eager (``examples/llm``, the decode step built by Python for every token), umx compiled (the
decode step traced once by ``mx.compile`` and replayed), both with each layer's q, k and v projections (and
gate and up) joined into one product (``fuse_projections``), torch eager (the same architecture written below,
``torch.nn.functional.scaled_dot_product_attention``) and MLX through mlx-lm (the real ``mlx``, when it imports).
Rows: weight dtypes (bfloat16 and 4-bit with groups of 64 by default; 4-bit rows skip a library without it).
Batch 1, a random prompt, greedy decoding; all columns load the same random checkpoint, written once in the
Hugging Face layout. Each column runs in its own process (the MLX one imports the real ``mlx`` under its own
name, so umx's alias never meets it), once to warm up and then timed.

Prompt tokens/s is the prompt's length over the time to the first generated token, for a prompt of a length not
seen before (the warm-up's prompt is shorter, and its generation as much longer, so that the cache has the same
size; a second warm-up prompt, 8 tokens longer, loads the kernels of such shapes): what a new prompt costs in a
warm process. "again" is the same prompt once more (the fastest of the later runs), which umx
may replay as a CUDA graph. Generation tokens/s counts the tokens after the first over the time they took (the
fastest run), as mlx-lm reports them. Peak memory is each library's own
counter (umx's and MLX's ``get_peak_memory``, torch's CUDA allocator), or the growth of the process's resident
memory for torch on the CPU. The roofline is the generation speed at which reading every weight once per token
(all but the input embedding, of which one row is read) takes all of the memory bandwidth (``--bandwidth``:
4.8 TB/s, the H200's, by default).

On a small shared CPU, pass ``--threads 1``: threads of a library's pool that wait on each other there (torch's
OpenMP pool in particular) can make a small model's decode many times slower.

Usage: python bench/llm.py [--tiny | --small] [--prompt 512] [--gen 256] [--dtypes bfloat16,q4] [--runs 3]
                           [--threads N] [--device cpu|gpu] [--bandwidth TB/s] [--columns umx,umx-compiled,torch,mlx]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
COLUMNS = ("umx", "umx-compiled", "torch", "mlx")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LABELS = {"umx": "umx eager", "umx-compiled": "umx compiled", "torch": "torch eager", "mlx": "MLX (mlx-lm)"}


# -- the umx column ---------------------------------------------------------------------------------------------


def _umx_worker(opts: dict) -> dict:
    sys.path.insert(0, ROOT)
    import umx as mx
    from examples.llm import fuse_projections, generate_step, load_model

    if opts["device"]:
        mx.set_default_device(getattr(mx, opts["device"]))
    dtype = opts["dtype"]
    model, _ = load_model(opts["path"], dtype=mx.bfloat16 if dtype == "q4" else getattr(mx, dtype))
    if dtype == "q4":
        if not hasattr(mx, "quantize"):
            return {"skip": "no mx.quantize yet"}
        import umx.nn as nn

        nn.quantize(model, group_size=64, bits=4)
        mx.eval(model.parameters())
    fuse_projections(model)  # (q, k, v in one product, and gate, up: see examples/llm/model.py)
    def run(ids=opts["prompt_ids"], gen=opts["gen"]):
        prompt = mx.array(ids, mx.int32)
        return _timed(generate_step(prompt, model, max_tokens=gen, compiled=opts["compiled"]))

    for warm in _warm_ups(opts):  # traces and captures the compiled step, compiles the kernels
        run(*warm)
    mx.reset_peak_memory()
    out = _best(run, opts["runs"])
    out["peak"] = mx.get_peak_memory()
    return out


def _warm_ups(opts: dict) -> list:
    """The warm-up runs' prompts and generation lengths. First a shorter prompt (so the timed one is new) and as
    many more tokens (so the cache, and a compiled step's shapes, are those of the timed runs); then a prompt 8
    tokens longer than the timed one, with one token: products of nearly the timed prompt's shapes, so that the
    libraries' kernels for them are loaded (CUDA loads a kernel at its first launch) and the timed prompt's
    time is that of a new length in a warm process."""
    ids = opts["prompt_ids"]
    keep = max(1, len(ids) * 7 // 8)
    return [(ids[:keep], opts["gen"] + len(ids) - keep), (ids + ids[:8], 1)]


def _best(run, runs: int) -> dict:
    """The first timed run's prompt (new), the fastest of the later runs' (the same prompt again) and the
    fastest generation of ``runs`` timed runs (a shared host slows runs at random; the fastest is the one least
    disturbed)."""
    results = [run() for _ in range(runs)]
    return {"prompt_s": results[0]["prompt_s"], "gen_s": min(r["gen_s"] for r in results),
            "again_s": min((r["prompt_s"] for r in results[1:]), default=None), "gen_tokens": results[0]["gen_tokens"]}


def _timed(tokens) -> dict:
    """Speeds of a token iterator: the first token ends the prompt's time."""
    start = time.perf_counter()
    n = 0
    for n, _ in enumerate(tokens, 1):
        if n == 1:
            first = time.perf_counter()
    end = time.perf_counter()
    return {"prompt_s": first - start, "gen_s": end - first, "gen_tokens": n - 1}


# -- the torch column -------------------------------------------------------------------------------------------


def _torch_worker(opts: dict) -> dict:
    import resource

    import torch
    import torch.nn.functional as F  # noqa: N812 (torch's convention)
    from safetensors.torch import load_file

    if opts["dtype"] != "bfloat16" and opts["dtype"] != "float32":
        return {"skip": f"no {opts['dtype']} in this torch model"}
    dev = "cuda" if opts["device"] == "gpu" or (opts["device"] is None and torch.cuda.is_available()) else "cpu"
    dtype = getattr(torch, opts["dtype"])
    cfg = json.load(open(os.path.join(opts["path"], "config.json")))
    rss0 = _rss()
    w = {}
    for f in sorted(os.listdir(opts["path"])):
        if f.endswith(".safetensors"):
            w.update({k: v.to(dev, dtype) for k, v in load_file(os.path.join(opts["path"], f)).items()})
    n_heads, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg["hidden_size"] // n_heads
    eps = cfg["rms_norm_eps"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, head_dim, 2, device=dev).float() / head_dim))
    max_len = len(opts["prompt_ids"]) + opts["gen"]
    angles = torch.outer(torch.arange(max_len, device=dev).float(), inv_freq)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    n_layers = cfg["num_hidden_layers"]
    lm_head = w.get("lm_head.weight", w["model.embed_tokens.weight"])

    def norm(x, weight):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(dtype) * weight

    def rope(x, pos, n):  # x: [B, H, n, D], rotating halves as Hugging Face's Llama does
        c, s = cos[pos:pos + n], sin[pos:pos + n]
        x1, x2 = x[..., :head_dim // 2], x[..., head_dim // 2:]
        return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)

    def forward(tokens, cache, pos):
        b, n = tokens.shape
        h = w["model.embed_tokens.weight"][tokens]
        for i in range(n_layers):
            p = f"model.layers.{i}."
            x = norm(h, w[p + "input_layernorm.weight"])
            q = F.linear(x, w[p + "self_attn.q_proj.weight"]).view(b, n, n_heads, head_dim).transpose(1, 2)
            k = F.linear(x, w[p + "self_attn.k_proj.weight"]).view(b, n, n_kv, head_dim).transpose(1, 2)
            v = F.linear(x, w[p + "self_attn.v_proj.weight"]).view(b, n, n_kv, head_dim).transpose(1, 2)
            q, k = rope(q, pos, n), rope(k, pos, n)
            kc, vc = cache[i]
            kc[:, :, pos:pos + n] = k
            vc[:, :, pos:pos + n] = v
            o = F.scaled_dot_product_attention(q, kc[:, :, :pos + n], vc[:, :, :pos + n], is_causal=n > 1,
                                               enable_gqa=True)
            h = h + F.linear(o.transpose(1, 2).reshape(b, n, -1), w[p + "self_attn.o_proj.weight"])
            x = norm(h, w[p + "post_attention_layernorm.weight"])
            g = F.linear(x, w[p + "mlp.gate_proj.weight"])
            u = F.linear(x, w[p + "mlp.up_proj.weight"])
            h = h + F.linear(F.silu(g) * u, w[p + "mlp.down_proj.weight"])
        return F.linear(norm(h[:, -1], w["model.norm.weight"]), lm_head)

    def tokens_of(ids, gen):
        cache = [(torch.zeros(1, n_kv, max_len, head_dim, device=dev, dtype=dtype),
                  torch.zeros(1, n_kv, max_len, head_dim, device=dev, dtype=dtype)) for _ in range(n_layers)]
        y = forward(torch.tensor([ids], device=dev), cache, 0).argmax(-1)
        pos = len(ids)
        for _ in range(gen):
            yield y.item()
            y = forward(y[:, None], cache, pos).argmax(-1)
            pos += 1

    def run(ids=opts["prompt_ids"], gen=opts["gen"]):
        with torch.inference_mode():
            return _timed(tokens_of(ids, gen))

    for warm in _warm_ups(opts):
        run(*warm)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = _best(run, opts["runs"])
    if dev == "cuda":
        out["peak"] = torch.cuda.max_memory_allocated()
    else:
        out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the MLX column ---------------------------------------------------------------------------------------------


def _mlx_worker(opts: dict) -> dict:
    from pathlib import Path

    try:
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_map
        from mlx_lm.generate import generate_step
        from mlx_lm.utils import load_model
    except ImportError as e:
        return {"skip": f"not importable ({e.name})"}
    if opts["device"]:
        mx.set_default_device(getattr(mx, opts["device"]))
    model, _ = load_model(Path(opts["path"]))
    dtype = mx.bfloat16 if opts["dtype"] == "q4" else getattr(mx, opts["dtype"])
    model.update(tree_map(lambda p: p.astype(dtype), model.parameters()))
    if opts["dtype"] == "q4":
        nn.quantize(model, group_size=64, bits=4)
    mx.eval(model.parameters())
    def run(ids=opts["prompt_ids"], gen=opts["gen"]):
        prompt = mx.array(ids, mx.int32)
        return _timed(tok for tok, _ in generate_step(prompt, model, max_tokens=gen))

    for warm in _warm_ups(opts):
        run(*warm)
    mx.reset_peak_memory()
    out = _best(run, opts["runs"])
    out["peak"] = mx.get_peak_memory()
    return out


WORKERS = {"umx": _umx_worker, "umx-compiled": _umx_worker, "torch": _torch_worker, "mlx": _mlx_worker}


# -- the table --------------------------------------------------------------------------------------------------


def _weight_bytes_per_token(config: dict, dtype: str) -> float:
    """Bytes of weights read to generate one token (every weight but the input embedding, of which one row)."""
    h, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads
    per_layer = h * (heads * d) * 2 + h * (kv * d) * 2 + 3 * h * f
    matrices = per_layer * config["num_hidden_layers"] + v * h  # the output projection
    norms = (2 * config["num_hidden_layers"] + 1) * h
    if dtype == "q4":
        return matrices * (4 + 2 * 16 / 64) / 8 + norms * 2  # 4 bits plus a bfloat16 scale and bias per 64
    return (matrices + norms) * {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]


def _run_column(column: str, opts: dict) -> dict:
    opts = dict(opts, compiled=column == "umx-compiled")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", column, json.dumps(opts)]
    env = dict(os.environ)
    if opts["threads"]:  # before the libraries start their thread pools
        env.update({name: str(opts["threads"]) for name in THREAD_VARIABLES})
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        return {"skip": "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="mlx-lm's test size: 2 layers, hidden 64, 4 heads")
    size.add_argument("--small", action="store_true", help="8 layers, hidden 512 (about 30M parameters)")
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    p.add_argument("--gen", type=int, default=256, help="generated tokens")
    p.add_argument("--dtypes", default="bfloat16,q4", help="rows: float32, bfloat16, float16, q4")
    p.add_argument("--columns", default=",".join(COLUMNS))
    p.add_argument("--device", choices=("cpu", "gpu"), help="default: each library's default device")
    p.add_argument("--runs", type=int, default=3, help="timed runs after the warm-up (the first: a new prompt)")
    p.add_argument("--threads", type=int, help="threads of each library's CPU pools (OpenMP, OpenBLAS)")
    p.add_argument("--bandwidth", type=float, default=4.8, help="memory bandwidth in TB/s (H200: 4.8)")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker[0]](json.loads(args.worker[1]))))
        return

    sys.path.insert(0, ROOT)
    import random

    import umx as mx
    from examples.llm import PRESETS, parameter_count, random_model, save_model

    preset = "tiny" if args.tiny else ("small" if args.small else "1b")
    config = PRESETS[preset]
    rng = random.Random(0)
    prompt_ids = [rng.randrange(config["vocab_size"]) for _ in range(args.prompt)]
    columns = [c for c in args.columns.split(",") if c]
    # The header first and each row as its column finishes (flushed): a run cut short keeps the rows it made.
    print(f"Llama-architecture model '{preset}' (hidden {config['hidden_size']}, {config['num_hidden_layers']} "
          f"layers, {config['num_attention_heads']} heads, {config['num_key_value_heads']} KV heads, FFN "
          f"{config['intermediate_size']}, vocabulary {config['vocab_size']}); batch 1, prompt {args.prompt}, "
          f"{args.gen} generated tokens, greedy; device: {args.device or 'default'}; threads: "
          f"{args.threads or 'default'}; {args.runs} timed runs", flush=True)
    with tempfile.TemporaryDirectory() as path:
        model = random_model(config, mx.bfloat16, seed=0)
        print(f"{parameter_count(model) / 1e6:.1f}M parameters", flush=True)
        save_model(path, model, config)
        del model
        head = (f"{'dtype':9} {'library':14} {'prompt tok/s':>13} {'again':>9} {'gen tok/s':>10} {'peak MB':>9} "
                f"{'roofline':>9}  note")
        print(head)
        print("-" * len(head), flush=True)
        for dtype in args.dtypes.split(","):
            roof = args.bandwidth * 1e12 / _weight_bytes_per_token(config, dtype)
            for column in columns:
                opts = {"path": path, "dtype": dtype, "prompt_ids": prompt_ids, "gen": args.gen,
                        "device": args.device, "runs": args.runs, "threads": args.threads}
                _print_row(dtype, column, _run_column(column, opts), args.prompt, roof)
            print(f"{'':9} {'roofline':14} {'':>13} {'':>9} {roof:>10.1f}  "
                  f"({_weight_bytes_per_token(config, dtype) / 1e6:.1f} "
                  f"MB of weights per token at {args.bandwidth} TB/s)", flush=True)


def _print_row(dtype: str, column: str, r: dict, prompt: int, roof: float) -> None:
    if "skip" in r:
        print(f"{dtype:9} {LABELS[column]:14} {'-':>13} {'-':>9} {'-':>10} {'-':>9} {'-':>9}  {r['skip']}", flush=True)
        return
    gen_tps = r["gen_tokens"] / r["gen_s"] if r["gen_tokens"] else math.nan
    again = f"{prompt / r['again_s']:.1f}" if r.get("again_s") else "-"
    print(f"{dtype:9} {LABELS[column]:14} {prompt / r['prompt_s']:>13.1f} {again:>9} {gen_tps:>10.1f} "
          f"{r['peak'] / 2**20:>9.1f} {gen_tps / roof:>9.2%}", flush=True)


if __name__ == "__main__":
    main()
