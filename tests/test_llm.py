"""Language models (examples/llm): caches, compiled decode, checkpoints, sampling, a NumPy reference of the
model; the mlx alias (umx.mlx_compat) and mlx-lm's own code running on umx."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import umx as mx
from examples.llm import (
    PRESETS,
    Model,
    fuse_projections,
    generate_step,
    llama_config,
    load_model,
    random_model,
    save_model,
)
from examples.llm.generate import top_p_sample
from examples.llm.weights import INDEX

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = PRESETS["tiny"]
VARIANTS = {
    "llama": TINY,
    "llama3-tied": dict(TINY, tie_word_embeddings=True, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
    "qwen2": dict(TINY, model_type="qwen2", rope_theta=1e6),
    "mistral-window": dict(TINY, model_type="mistral", sliding_window=5),
}
PROMPT = [1, 5, 9, 200, 7, 42]


def _recomputed(model, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens with no cache: the whole sequence runs through the model for every token."""
    tokens = list(prompt)
    for _ in range(n):
        logits = model(mx.array(tokens, mx.int32)[None])
        tokens.append(int(mx.argmax(logits[0, -1]).item()))
    return tokens[len(prompt):]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_generation_matches_recomputation(device, variant):
    with mx.stream(device):
        model = random_model(VARIANTS[variant], std=0.3, seed=1)  # large weights: a sharp, varied distribution
        prompt = mx.array(PROMPT, mx.int32)
        expected = _recomputed(model, PROMPT, 10)
        assert len(set(expected)) > 1  # a test of something: the tokens vary
        assert list(generate_step(prompt, model, max_tokens=10)) == expected
        assert list(generate_step(prompt, model, max_tokens=10, static_cache=True)) == expected


def test_cache_of_whole_blocks_is_the_prompt_and_grows(device, monkeypatch):
    # (a prompt of whole blocks becomes the buffer as it is; the next token grows it by a block)
    from examples.llm.cache import KVCache

    monkeypatch.setattr(KVCache, "step", 4)
    with mx.stream(device):
        model = random_model(VARIANTS["llama"], std=0.3, seed=3)
        prompt = [3, 1, 4, 1, 5, 9, 2, 6]
        expected = _recomputed(model, prompt, 7)
        assert list(generate_step(mx.array(prompt, mx.int32), model, max_tokens=7)) == expected
        cache = KVCache()
        k, v = mx.ones((1, 2, 8, 4)), mx.zeros((1, 2, 8, 4))
        got_k, got_v = cache.update_and_fetch(k, v)
        assert got_k is k and got_v is v and cache.offset == 8
        k2, v2 = cache.update_and_fetch(mx.full((1, 2, 1, 4), 2.0), mx.full((1, 2, 1, 4), 3.0))
        assert cache.keys.shape[2] == 12 and k2.shape[2] == 9
        np.testing.assert_array_equal(np.asarray(k2)[0, 0, :, 0], [1] * 8 + [2])
        np.testing.assert_array_equal(np.asarray(v2)[0, 1, :, 0], [0] * 8 + [3])


def test_static_cache_prompt_attends_to_itself(device):
    # (the first write into a static cache is a prompt at position 0: its own keys, a causal mask, not the whole
    # buffer behind a mask array; later steps see the whole buffer and mask its unwritten positions)
    from examples.llm.cache import StaticKVCache

    with mx.stream(device):
        model = random_model(VARIANTS["llama"], std=0.3, seed=4)
        cache = [StaticKVCache(16) for _ in model.layers]
        assert model._mask(6, cache) == "causal"
        k, v = mx.ones((1, 2, 6, 4)), mx.zeros((1, 2, 6, 4))
        got_k, got_v = cache[0].update_and_fetch(k, v)
        assert got_k is k and got_v is v and cache[0].keys.shape == (1, 2, 16, 4)
        cache[0].advance(6)
        mask = model._mask(1, cache)
        np.testing.assert_array_equal(np.asarray(mask), [[True] * 7 + [False] * 9])
        k2, _ = cache[0].update_and_fetch(mx.full((1, 2, 1, 4), 2.0), mx.full((1, 2, 1, 4), 3.0))
        np.testing.assert_array_equal(np.asarray(k2)[0, 0, :, 0], [1] * 6 + [2] + [0] * 9)


@pytest.mark.parametrize("variant", ["llama", "mistral-window"])
def test_compiled_decode_matches_eager(device, variant):
    with mx.stream(device):
        model = random_model(VARIANTS[variant], std=0.3, seed=2)
        prompt = mx.array(PROMPT, mx.int32)
        eager = list(generate_step(prompt, model, max_tokens=12))
        assert list(generate_step(prompt, model, max_tokens=12, compiled=True)) == eager
        assert list(generate_step(prompt, model, max_tokens=12, compiled=True)) == eager  # replayed again


def test_sharded_checkpoint_round_trip(tmp_path):
    model = random_model(TINY, seed=3)
    files = save_model(tmp_path, model, TINY, max_shard_bytes=150_000)
    assert len(files) > 1
    assert [f.name for f in files][0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / INDEX).read_text())
    assert "model.layers.0.self_attn.q_proj.weight" in index["weight_map"]
    assert set(index["weight_map"].values()) == {f.name for f in files}
    loaded, config = load_model(tmp_path)
    assert config == TINY
    from umx.utils import tree_flatten

    saved = dict(tree_flatten(model.parameters()))
    got = dict(tree_flatten(loaded.parameters()))
    assert got.keys() == saved.keys()
    for name, w in saved.items():
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(w), err_msg=name)
    # (the same weights; the outputs within float32's rounding: on an H100 the two passes differed by 2e-7, the
    # second of a structure being replayed as a CUDA graph)
    x = mx.array([PROMPT], mx.int32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_checkpoint_layout_and_dtype(tmp_path):
    config = dict(TINY, tie_word_embeddings=True)
    save_model(tmp_path, random_model(config, mx.bfloat16, seed=4), config)
    names = set(mx.load(str(tmp_path / "model.safetensors")))
    assert "lm_head.weight" not in names  # tied: the embedding is the output projection
    assert {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.mlp.down_proj.weight",
            "model.layers.0.input_layernorm.weight"} <= names
    model, _ = load_model(tmp_path)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == mx.bfloat16
    model32, _ = load_model(tmp_path, dtype=mx.float32)
    assert model32.model.norm.weight.dtype == mx.float32


def test_load_refuses_missing_weights(tmp_path):
    save_model(tmp_path, random_model(TINY), TINY)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(dict(TINY, num_hidden_layers=3), f)
    with pytest.raises(ValueError):
        load_model(tmp_path)


def test_top_p_sampling_statistics():
    probs = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    n = 20000
    logits = mx.broadcast_to(mx.array(np.log(probs), mx.float32), (n, probs.size))
    # top_p 0.8 keeps the tokens whose more likely predecessors hold less than 0.8: the first three
    counts = np.bincount(np.asarray(top_p_sample(logits, 1.0, 0.8, key=mx.random.key(0))), minlength=5)
    expected = np.array([0.4, 0.3, 0.15, 0, 0]) / 0.85
    assert counts[3:].sum() == 0
    np.testing.assert_allclose(counts / n, expected, atol=4 * np.sqrt(0.25 / n))
    # temperature 0.5 squares the probabilities; top_p 1 keeps every token
    counts = np.bincount(np.asarray(top_p_sample(logits, 0.5, 1.0, key=mx.random.key(1))), minlength=5)
    np.testing.assert_allclose(counts / n, probs**2 / (probs**2).sum(), atol=4 * np.sqrt(0.25 / n))
    # a tiny top_p is greedy
    assert set(np.asarray(top_p_sample(logits[:100], 1.0, 0.01)).tolist()) == {0}


def _numpy_logits(weights: dict, cfg: dict, tokens: list[int]) -> np.ndarray:
    """A float64 NumPy forward pass of a Llama model (written from the architecture, not from umx's code)."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = hidden // heads
    eps = cfg["rms_norm_eps"]
    n = len(tokens)

    def norm(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    def rope(x):  # x [heads, n, d]: rotate the two halves of each head by position-dependent angles
        inv = cfg["rope_theta"] ** (-np.arange(0, d, 2) / d)
        ang = np.arange(n)[:, None] * inv[None]
        c, s = np.cos(ang), np.sin(ang)
        a, b = x[..., :d // 2], x[..., d // 2:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)

    h = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = norm(h, w[p + "input_layernorm.weight"])
        q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(n, heads, d).transpose(1, 0, 2)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).reshape(n, kv, d).transpose(1, 0, 2)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(n, kv, d).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, heads // kv, axis=0), np.repeat(v, heads // kv, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(d) + np.triu(np.full((n, n), -np.inf), 1)
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        o = (attn @ v).transpose(1, 0, 2).reshape(n, hidden)
        h = h + o @ w[p + "self_attn.o_proj.weight"].T
        x = norm(h, w[p + "post_attention_layernorm.weight"])
        g, u = x @ w[p + "mlp.gate_proj.weight"].T, x @ w[p + "mlp.up_proj.weight"].T
        h = h + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    return norm(h, w["model.norm.weight"]) @ w["lm_head.weight"].T


def test_logits_match_numpy_float64_reference(device):
    from umx.utils import tree_flatten

    cfg = llama_config(hidden=32, layers=1, heads=4, kv_heads=2, ffn=48, vocab=50)
    with mx.stream(device):
        model = random_model(cfg, std=0.2, seed=5)
        weights = dict(tree_flatten(model.parameters()))
        weights.update({f"model.layers.0.{n}.weight": np.random.default_rng(6).uniform(0.5, 1.5, 32)
                        for n in ("input_layernorm", "post_attention_layernorm")})
        model.load_weights([(k, mx.array(np.asarray(v, np.float32))) for k, v in weights.items()])
        tokens = [3, 14, 15, 9, 26, 5, 35]
        got = np.asarray(model(mx.array([tokens], mx.int32))[0])
    expected = _numpy_logits(dict(tree_flatten(model.parameters())), cfg, tokens)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_model_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="model_type"):
        Model(dict(TINY, model_type="gpt2"))


@pytest.mark.skipif(not hasattr(mx, "quantize"), reason="mx.quantize is not in umx yet")
def test_compiled_decode_traces_once_per_model(device):
    # a second generation (another prompt of the same length: the same cache shape) replays the first's trace;
    # new weights trace again
    from examples.llm.generate import greedy

    with mx.stream(device):
        model = random_model(TINY, std=0.3, seed=3)
        first = list(generate_step(mx.array(PROMPT, mx.int32), model, max_tokens=6, compiled=True))
        steps = model._umx_decode_steps.by_kind
        fn = steps[(greedy, True)]
        assert len(fn._cache) == 1
        other = mx.array(PROMPT[::-1], mx.int32)
        again = list(generate_step(other, model, max_tokens=6, compiled=True))
        assert again == list(generate_step(other, model, max_tokens=6))
        assert model._umx_decode_steps.by_kind[(greedy, True)] is fn and len(fn._cache) == 1
        assert "_umx_decode_steps" not in model.parameters() and "_umx_decode_steps" not in model
        model.update(random_model(TINY, std=0.3, seed=4).parameters())
        new = list(generate_step(mx.array(PROMPT, mx.int32), model, max_tokens=6, compiled=True))
        assert model._umx_decode_steps.by_kind[(greedy, True)] is not fn
        assert new == list(generate_step(mx.array(PROMPT, mx.int32), model, max_tokens=6))
        assert new != first


def test_quantized_model_generates(device):
    import umx.nn as nn

    with mx.stream(device):
        model = random_model(TINY, std=0.3, seed=7)
        nn.quantize(model, group_size=64, bits=4)
        prompt = mx.array(PROMPT, mx.int32)
        eager = list(generate_step(prompt, model, max_tokens=8))
        assert eager == _recomputed(model, PROMPT, 8)
        assert list(generate_step(prompt, model, max_tokens=8, compiled=True)) == eager


@pytest.mark.parametrize("quantized", [False, True])
def test_fused_projections_give_the_same_logits_and_tokens(device, quantized):
    import umx.nn as nn

    with mx.stream(device):
        model = random_model(VARIANTS["qwen2"], std=0.3, seed=8)  # (q, k and v with biases)
        if quantized:
            nn.quantize(model, group_size=64, bits=4)
        prompt = mx.array(PROMPT, mx.int32)
        logits = model(prompt[None])
        tokens = list(generate_step(prompt, model, max_tokens=8))
        fuse_projections(model)
        attn, mlp = model.layers[0].self_attn, model.layers[0].mlp
        assert "qkv_proj" in attn and "q_proj" not in attn and "gate_up_proj" in mlp and "up_proj" not in mlp
        kv = TINY["num_key_value_heads"] * TINY["hidden_size"] // TINY["num_attention_heads"]
        assert attn.qkv_proj.weight.shape[0] == TINY["hidden_size"] + 2 * kv
        np.testing.assert_allclose(np.array(model(prompt[None])), np.array(logits), rtol=1e-4, atol=1e-4)
        assert list(generate_step(prompt, model, max_tokens=8)) == tokens
        assert list(generate_step(prompt, model, max_tokens=8, compiled=True)) == tokens
        # the compiled step is still one program (a node of several outputs, as split is, would make it replay
        # node by node: five times slower on a GPU)
        step = next(fn for (_, compiled), fn in model._umx_decode_steps.by_kind.items() if compiled)
        assert any(getattr(t, "program", None) for t in step._cache.values())


def test_cli_generates_from_random_checkpoint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "examples.llm", "--random", "tiny", "--model", str(tmp_path),
                          "--prompt-ids", "1,2,3", "--max-tokens", "5", "--compile"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == 5
    assert "generation: 5 tokens" in out.stderr
    assert (tmp_path / "config.json").exists()


# -- the mlx alias ----------------------------------------------------------------------------------------------


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` run by a fresh interpreter (the alias must come before any import of the real mlx)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def test_mlx_alias_gives_umx_modules():
    out = _run_python("""
        import umx.mlx_compat
        umx.mlx_compat.install()
        import mlx.core as mx
        import mlx.nn
        import mlx.utils
        import umx, umx.nn, umx.utils
        from mlx.nn.layers.distributed import shard_linear
        from mlx.core import fast
        assert mx is umx and mlx.nn is umx.nn and mlx.utils is umx.utils and fast is umx.fast
        assert mlx.core is umx and mlx.utils.tree_map is umx.utils.tree_map
        import mlx.optimizers
        assert mlx.optimizers.Adam is umx.optimizers.Adam
        assert umx.__spec__.name == "umx"  # umx's modules keep their own identity
        try:
            import mlx.extension
        except ImportError:
            pass
        else:
            raise AssertionError("a module umx does not have must not import")
        print("ok")
    """)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_mlx_alias_refuses_after_the_real_mlx():
    if importlib.util.find_spec("mlx") is None:
        pytest.skip("the real mlx is not installed")
    out = _run_python("""
        import mlx.core
        import umx.mlx_compat
        umx.mlx_compat.install()
    """)
    assert out.returncode != 0 and "already imported" in out.stderr


def test_mlx_compat_runs_a_script(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nimport mlx.core as mx\nprint(type(mx.array(1)).__module__, sys.argv[1:])\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "umx.mlx_compat", str(script), "a", "b"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["umx.array", "['a',", "'b']"]


def test_sharded_linear_layers_split_the_products():
    import umx.nn as nn
    from umx.nn.layers.distributed import AllToShardedLinear, ShardedToAllLinear

    class Rank:  # a stand-in group: the shards a process of a larger group would hold
        def __init__(self, rank, size):
            self._rank, self._size = rank, size

        def rank(self):
            return self._rank

        def size(self):
            return self._size

    lin = nn.Linear(8, 6)
    x = mx.random.normal((3, 8), key=mx.random.key(5))
    parts = [AllToShardedLinear.from_linear(lin, group=Rank(r, 2))(x) for r in range(2)]
    # (atol: an output near zero has no relative precision; a split sum rounds differently)
    np.testing.assert_allclose(np.asarray(mx.concatenate(parts, axis=-1)), np.asarray(lin(x)), rtol=1e-5, atol=1e-6)
    fused = AllToShardedLinear.from_linear(lin, segments=3, group=Rank(1, 2))  # q, k, v of 2 rows each
    np.testing.assert_array_equal(np.asarray(fused.weight), np.asarray(lin.weight)[[1, 3, 5]])
    down = [ShardedToAllLinear.from_linear(lin, group=Rank(r, 2)) for r in range(2)]
    partial = [x[:, 4 * r:4 * r + 4] @ down[r].weight.T for r in range(2)]
    np.testing.assert_allclose(np.asarray(partial[0] + partial[1] + down[0].bias), np.asarray(lin(x)), rtol=1e-5,
                               atol=1e-6)
    world = nn.layers.distributed.shard_linear(lin, "all-to-sharded")  # a world of one: the same layer
    np.testing.assert_allclose(np.asarray(world(x)), np.asarray(lin(x)), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None, reason="mlx-lm is not installed")
def test_mlx_lm_generates_on_umx():
    """mlx-lm's own Llama, built from a config dict with random weights, generates on umx with its own
    ``generate_step``, ``generate`` and ``stream_generate`` (a word-level tokenizer built here, no download),
    and its cached greedy tokens match a full recomputation."""
    out = _run_python("""
        import umx.mlx_compat
        umx.mlx_compat.install()
        import mlx.core as mx
        from mlx_lm import generate, stream_generate
        from mlx_lm.generate import generate_step
        from mlx_lm.models import llama
        from mlx_lm.sample_utils import make_sampler
        from mlx.utils import tree_map
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        assert type(mx.array(1)).__module__ == "umx.array"
        mx.random.seed(0)
        args = llama.ModelArgs.from_dict({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "vocab_size": 100})
        model = llama.Model(args)
        model.update(tree_map(lambda p: p * 8, model.parameters()))  # larger weights: varied tokens
        mx.eval(model.parameters())
        prompt = [1, 2, 3, 4]
        cached = [t for t, _ in generate_step(mx.array(prompt), model, max_tokens=8)]
        tokens = list(prompt)
        for _ in range(8):
            tokens.append(mx.argmax(model(mx.array(tokens)[None])[0, -1]).item())
        assert cached == tokens[len(prompt):], (cached, tokens)
        assert len(set(cached)) > 1

        tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(100)}, unk_token="w0"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w99", unk_token="w0")
        text = generate(model, hf, "w1 w2 w3 w4", max_tokens=8)
        assert text.split()[0] == f"w{cached[0]}", text
        responses = list(stream_generate(model, hf, prompt, max_tokens=6, sampler=make_sampler(0.8, top_p=0.9)))
        assert len(responses) == 6 and responses[-1].generation_tps > 0
        print("ok")
    """)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# mlx-lm architectures that build from one small shared config (others need fields of their own)
_MLX_LM_ARCHITECTURES = ("llama", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "qwen3_next", "gemma", "gemma2", "phi3",
                         "phimoe", "mixtral", "deepseek_v3", "olmo2", "olmoe", "cohere", "starcoder2", "internlm2",
                         "glm4", "smollm3", "hunyuan_v1_dense", "gpt_oss", "falcon_h1", "seed_oss")
# the start of each script below, run once with MLX (argv[1] "mlx") and once with umx through the alias ("umx")
_EITHER = """
import importlib, json, sys
import numpy as np
if sys.argv[1] == "umx":
    import umx.mlx_compat
    umx.mlx_compat.install()
import mlx.core as mx
"""

_TINY_LM = _EITHER + """
import mlx.nn as nn
from mlx.utils import tree_flatten
cfg = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
           vocab_size=128, rms_norm_eps=1e-5, head_dim=16, max_position_embeddings=256, rope_theta=10000.0,
           tie_word_embeddings=False, layer_norm_eps=1e-5, norm_eps=1e-5, layer_norm_epsilon=1e-5, num_experts=4,
           num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=64, n_routed_experts=4,
           n_shared_experts=1, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8,
           v_head_dim=16, first_k_dense_replace=1, moe_layer_freq=1, routed_scaling_factor=1.0, topk_group=1,
           n_group=1, norm_topk_prob=True, sliding_window=16, query_pre_attn_scalar=16, attn_logit_softcapping=50.0,
           final_logit_softcapping=30.0, linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
           linear_value_head_dim=16, linear_conv_kernel_dim=4, full_attention_interval=2, partial_rotary_factor=0.5,
           decoder_sparse_step=1, mlp_only_layers=[], num_local_experts=4, hidden_act="silu", rope_scaling=None,
           attention_bias=False, mlp_bias=False, use_qk_norm=True)
tokens = mx.array(np.array([[1, 5, 9, 17, 33, 2, 7, 64]], np.int32))
for name in sys.argv[3].split(","):
    module = importlib.import_module(f"mlx_lm.models.{name}")
    mx.random.seed(0)
    model = module.Model(module.ModelArgs.from_dict(dict(cfg, model_type=name)))
    path = f"{sys.argv[2]}/{name}"
    if sys.argv[1] == "mlx":
        mx.savez(path + ".npz", **dict(tree_flatten(model.parameters())))
    else:
        model.load_weights([(k, mx.array(v)) for k, v in np.load(path + ".npz").items()])
    np.save(f"{path}.{sys.argv[1]}.npy", np.array(model(tokens).astype(mx.float32)))
    loss = lambda m: nn.losses.cross_entropy(m(tokens[:, :-1]), tokens[:, 1:], reduction="mean")
    value, grads = nn.value_and_grad(model, loss)(model)
    np.savez(f"{path}.{sys.argv[1]}.grads.npz", loss=np.array(value),
             **{k: np.array(g.astype(mx.float32)) for k, g in tree_flatten(grads)})
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None or importlib.util.find_spec("mlx") is None,
                    reason="mlx-lm and MLX's own build are the reference")
def test_mlx_lm_architectures_match_mlx(tmp_path):
    """mlx-lm's model classes of 23 architectures (dense, mixture of experts, multi-head latent attention, gated
    delta and state-space layers, attention sinks), built small with MLX's random weights, give MLX's logits, and
    a next-token loss's gradients, on umx (through the alias, the same weights loaded): a separate process for
    each library."""
    names = ",".join(_MLX_LM_ARCHITECTURES)
    for lib in ("mlx", "umx"):
        out = _run_python(_TINY_LM, lib, str(tmp_path), names)
        assert out.returncode == 0, out.stderr[-3000:]
    for name in _MLX_LM_ARCHITECTURES:
        theirs, ours = (np.load(tmp_path / f"{name}.{lib}.npy") for lib in ("mlx", "umx"))
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max(), err_msg=name)
        theirs, ours = (np.load(tmp_path / f"{name}.{lib}.grads.npz") for lib in ("mlx", "umx"))
        assert sorted(ours.files) == sorted(theirs.files), name
        for key in theirs.files:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-3, atol=1e-4 * np.abs(theirs[key]).max() + 1e-9,
                                       err_msg=f"{name}: {key}")


_LORA = _EITHER + """
import mlx.optimizers as optim
from mlx.utils import tree_flatten
from mlx_lm.models import llama
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.trainer import TrainingArgs, train
from mlx_lm.tuner.utils import linear_to_lora_layers

folder = sys.argv[2]
mx.random.seed(0)
model = llama.Model(llama.ModelArgs.from_dict({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "vocab_size": 100}))
model.freeze()
linear_to_lora_layers(model, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
if sys.argv[1] == "mlx":  # (MLX's initial weights, the adapters' included, are umx's)
    mx.savez(folder + "/weights.npz", **dict(tree_flatten(model.parameters())))
else:
    model.load_weights([(k, mx.array(v)) for k, v in np.load(folder + "/weights.npz").items()])
rng = np.random.default_rng(0)
data = [(list(rng.integers(1, 100, rng.integers(8, 20))), 0) for _ in range(16)]


class Losses(TrainingCallback):
    def __init__(self):
        self.seen = []

    def on_train_loss_report(self, info):
        self.seen.append(info["train_loss"])


losses = Losses()
np.random.seed(0)  # (the trainer draws its batches' order from NumPy's global generator)
train(model, optim.Adam(learning_rate=1e-4), data, None,
      TrainingArgs(batch_size=4, iters=8, steps_per_report=1, steps_per_eval=1000, steps_per_save=1000,
                   max_seq_length=64, adapter_file=f"{folder}/adapters_{sys.argv[1]}.safetensors"),
      training_callback=losses)
json.dump(losses.seen, open(f"{folder}/losses_{sys.argv[1]}.json", "w"))
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None or importlib.util.find_spec("mlx") is None,
                    reason="mlx-lm and MLX's own build are the reference")
def test_mlx_lm_lora_training_gives_mlxs_losses(tmp_path):
    """mlx-lm's own LoRA fine-tuning (its trainer: a step compiled with the model's, the optimizer's and the random
    state, gradients averaged over a world of one) trains a small Llama on umx with MLX's losses at every step,
    from MLX's initial weights and batches in the same order. (With a learning rate of 1e-2 the runs drift apart
    after a few steps, as any two float32 runs of Adam do there: gradients near zero flip full-size updates.)"""
    for lib in ("mlx", "umx"):
        out = _run_python(_LORA, lib, str(tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
    theirs, ours = (json.loads((tmp_path / f"losses_{lib}.json").read_text()) for lib in ("mlx", "umx"))
    assert len(ours) == len(theirs) == 8
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)
    assert (tmp_path / "adapters_umx.safetensors").exists()


_GENERATE = _EITHER + """
from mlx.utils import tree_flatten, tree_map
from mlx_lm.generate import generate_step
from mlx_lm.models import llama
from mlx_lm.utils import quantize_model

folder = sys.argv[2]
mx.random.seed(0)
model = llama.Model(llama.ModelArgs.from_dict({"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2,
    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "vocab_size": 100}))
model.update(tree_map(lambda p: p * 8, model.parameters()))  # (larger weights: varied tokens)
if sys.argv[1] == "mlx":
    mx.savez(folder + "/weights.npz", **dict(tree_flatten(model.parameters())))
else:
    model.load_weights([(k, mx.array(v)) for k, v in np.load(folder + "/weights.npz").items()])
prompt = mx.array(list(range(1, 11)))
runs = {"plain": {}, "rotating cache": {"max_kv_size": 8},
        "4-bit cache": {"kv_bits": 4, "kv_group_size": 32, "quantized_kv_start": 0},
        "8-bit cache from token 4": {"kv_bits": 8, "kv_group_size": 32, "quantized_kv_start": 4}}
out = {name: [t for t, _ in generate_step(prompt, model, max_tokens=12, **kw)] for name, kw in runs.items()}
quantized, _ = quantize_model(model, {}, 32, 4)
out["4-bit weights"] = [t for t, _ in generate_step(prompt, quantized, max_tokens=12)]

from mlx_lm.generate import batch_generate
from mlx_lm.tokenizer_utils import TokenizerWrapper
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(100)}, unk_token="w0"))
words.pre_tokenizer = pre_tokenizers.Whitespace()
tokenizer = TokenizerWrapper(PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w99", unk_token="w0"))
batch = batch_generate(model, tokenizer, [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [20, 21, 22, 23, 24]], max_tokens=10,
                       return_token_ids=True)
out["batch of three prompts"] = batch.token_ids
json.dump(out, open(f"{folder}/tokens_{sys.argv[1]}.json", "w"))
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None or importlib.util.find_spec("mlx") is None,
                    reason="mlx-lm and MLX's own build are the reference")
def test_mlx_lm_generation_with_its_caches_and_quantization_gives_mlxs_tokens(tmp_path):
    """mlx-lm's greedy generation on umx, from MLX's weights, gives MLX's tokens: with its plain cache, a rotating
    one shorter than the prompt, 4-bit and 8-bit quantized caches, a model mlx-lm quantized to 4 bits, and its
    continuous batching of prompts of three lengths (``batch_generate``)."""
    for lib in ("mlx", "umx"):
        out = _run_python(_GENERATE, lib, str(tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
    theirs, ours = (json.loads((tmp_path / f"tokens_{lib}.json").read_text()) for lib in ("mlx", "umx"))
    assert ours == theirs
    assert len(set(ours["plain"])) > 3


_HF_LLAMA = """
import sys
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
torch.manual_seed(0)
transformers.LlamaForCausalLM(config).save_pretrained(sys.argv[1], safe_serialization=True)
words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(128)}, unk_token="w0"))
words.pre_tokenizer = pre_tokenizers.Whitespace()
PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w127", unk_token="w0", bos_token="w1").save_pretrained(
    sys.argv[1])
"""


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mlx_lm", "mlx", "torch", "transformers")),
                    reason="mlx-lm, MLX's own build, torch and transformers make the reference")
def test_mlx_lm_convert_and_lora_cli_as_mlx(tmp_path):
    """mlx-lm's command line on umx as on MLX: ``convert`` of a Hugging Face Llama folder (written by
    transformers), quantized to 4 bits, gives the same tensors, bit for bit, and the same config; ``lora`` (LoRA
    and DoRA) fine-tunes that quantized model on a small JSONL dataset to the same adapters (within 1e-4; they agree
    to about 6e-6 after six steps)."""
    import safetensors.numpy

    hf = tmp_path / "hf"
    assert _run_python(_HF_LLAMA, str(hf)).returncode == 0
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def cli(lib: str, *args: str) -> None:
        prefix = ["-m", "umx.mlx_compat"] if lib == "umx" else []
        done = subprocess.run([sys.executable, *prefix, "-m", "mlx_lm", *args], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    for lib in ("mlx", "umx"):
        cli(lib, "convert", "--hf-path", str(hf), "--mlx-path", str(tmp_path / lib), "-q", "--q-bits", "4",
            "--q-group-size", "32")
    theirs, ours = (safetensors.numpy.load_file(str(tmp_path / lib / "model.safetensors")) for lib in ("mlx", "umx"))
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype and np.array_equal(ours[name], theirs[name]), name
    assert json.loads((tmp_path / "umx" / "config.json").read_text()) == json.loads(
        (tmp_path / "mlx" / "config.json").read_text())
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("valid", 8)):
        lines = [json.dumps({"text": " ".join(f"w{i}" for i in rng.integers(2, 120, rng.integers(6, 20)))})
                 for _ in range(n)]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    for kind in ("lora", "dora"):
        for lib in ("mlx", "umx"):
            cli(lib, "lora", "--model", str(tmp_path / "mlx"), "--train", "--data", str(data), "--iters", "6",
                "--batch-size", "4", "--num-layers", "2", "--learning-rate", "1e-4", "--steps-per-eval", "1000",
                "--val-batches", "1", "--adapter-path", str(tmp_path / f"{kind}-{lib}"), "--fine-tune-type", kind,
                "--seed", "0")
        theirs, ours = (safetensors.numpy.load_file(str(tmp_path / f"{kind}-{lib}" / "adapters.safetensors"))
                        for lib in ("mlx", "umx"))
        assert sorted(ours) == sorted(theirs)
        for name in theirs:
            np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-4 * np.abs(theirs[name]).max(),
                                       err_msg=f"{kind}: {name}")
