"""Model sizes for random checkpoints (Hugging Face ``config.json`` dicts), shared by the CLI, tests and bench.

``tiny`` is mlx-lm's test size; ``small`` a model whose decode is dominated by its products on a CPU; ``1b`` the
Llama 3.2 1B shape with a 32000-token vocabulary (about 1.2B parameters, untied).
"""

from __future__ import annotations


def llama_config(hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, vocab: int, **extra) -> dict:
    """A Llama ``config.json`` dict of these sizes."""
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "intermediate_size": ffn, "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "max_position_embeddings": 4096, **extra}


PRESETS = {
    "tiny": llama_config(64, 2, 4, 2, 128, 1000),
    "small": llama_config(512, 8, 8, 4, 1408, 8000),
    "1b": llama_config(2048, 16, 32, 8, 8192, 32000),
}
