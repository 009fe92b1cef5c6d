"""Train a small transformer language model on a synthetic task, as MLX's transformer_lm example trains one on
text.

Each sequence is ``period`` random tokens repeated: the first ``period`` tokens cannot be predicted, every later
one is the token ``period`` places back, which the model learns to fetch with causal self-attention. So the loss
starts at about ``log(vocab_size)`` and falls towards the share of unpredictable targets times that,
``(period - 1) / context_size * log(vocab_size)``. The model is ``nn.TransformerEncoder`` (pre-norm blocks) under a
causal mask, with sinusoidal positions and input and output embeddings tied or not; AdamW trains it in a step
compiled with ``mx.compile``, whose state lists the model's, the optimizer's and the random generator's.

Usage: python examples/transformer_lm.py [--steps 300] [--dims 64] [--num-layers 2] [--context-size 32] [--cpu]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import partial

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402


class TransformerLM(nn.Module):
    """Token embedding plus sinusoidal positions, a causal transformer encoder, and a projection to the
    vocabulary (the embedding's transpose when ``tie_embeddings``)."""

    def __init__(self, vocab_size: int, num_layers: int, dims: int, num_heads: int, mlp_dims: int | None = None,
                 dropout: float = 0.0, tie_embeddings: bool = True):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dims)
        self.pe = nn.SinusoidalPositionalEncoding(dims)
        self.transformer = nn.TransformerEncoder(num_layers, dims, num_heads, mlp_dims, dropout=dropout,
                                                 norm_first=True)
        if not tie_embeddings:
            self.out_proj = nn.Linear(dims, vocab_size)
        self.tie_embeddings = tie_embeddings

    def __call__(self, x):
        length = x.shape[1]
        mask = nn.MultiHeadAttention.create_additive_causal_mask(length)
        x = self.embedding(x) + self.pe(mx.arange(length))
        x = self.transformer(x, mask)
        return self.embedding.as_linear(x) if self.tie_embeddings else self.out_proj(x)


def loss_fn(model, inputs, targets):
    return nn.losses.cross_entropy(model(inputs), targets, reduction="mean")


def repeated_sequences(rng, batch_size: int, context_size: int, period: int, vocab_size: int):
    """``(inputs, targets)``: int32 ``[batch_size, context_size]`` each, a batch of ``period`` random tokens
    repeated, and the same shifted by one (the next token of each position)."""
    pattern = rng.integers(0, vocab_size, (batch_size, period))
    seq = np.tile(pattern, (1, context_size // period + 2))[:, :context_size + 1].astype(np.int32)
    return mx.array(seq[:, :-1]), mx.array(seq[:, 1:])


def main(steps: int = 300, batch_size: int = 16, context_size: int = 32, period: int = 3, vocab_size: int = 16,
         num_layers: int = 2, dims: int = 64, num_heads: int = 4, mlp_dims: int | None = None,
         dropout: float = 0.0, tie_embeddings: bool = True, learning_rate: float = 3e-3,
         weight_decay: float = 0.01, seed: int = 0, compiled: bool = True, verbose: bool = True) -> list:
    """Train the language model for ``steps`` steps; returns the loss of every step (Python floats).

    Args:
        steps (int): training steps. Default: ``300``.
        batch_size (int): sequences per step. Default: ``16``.
        context_size (int): tokens per sequence. Default: ``32``.
        period (int): the length of the repeated pattern. Default: ``3``.
        vocab_size (int): the number of distinct tokens. Default: ``16``.
        num_layers (int): transformer blocks. Default: ``2``.
        dims (int): the model's feature size. Default: ``64``.
        num_heads (int): attention heads. Default: ``4``.
        mlp_dims (int, optional): the blocks' MLP size; default ``4 * dims``.
        dropout (float): dropout in the blocks. Default: ``0.0``.
        tie_embeddings (bool): project to the vocabulary with the embedding's transpose. Default: ``True``.
        learning_rate (float): AdamW's peak learning rate (reached after a linear warm-up over the first tenth
            of the steps). Default: ``3e-3``.
        weight_decay (float): AdamW's weight decay. Default: ``0.01``.
        seed (int): seeds the data, the initial weights and dropout. Default: ``0``.
        compiled (bool): compile the training step. Default: ``True``.
        verbose (bool): print progress. Default: ``True``.

    Returns:
        list[float]: the training loss of each step.
    """
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    model = TransformerLM(vocab_size, num_layers, dims, num_heads, mlp_dims, dropout, tie_embeddings)
    mx.eval(model.parameters())
    warmup = max(1, steps // 10)
    schedule = optim.join_schedules([optim.linear_schedule(learning_rate / warmup, learning_rate, warmup),
                                     optim.cosine_decay(learning_rate, steps - warmup, learning_rate / 10)],
                                    [warmup])
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    loss_and_grad_fn = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    def step(inputs, targets):
        loss, grads = loss_and_grad_fn(model, inputs, targets)
        optimizer.update(model, grads)
        return loss

    if compiled:
        step = partial(mx.compile, inputs=state, outputs=state)(step)

    losses = []
    tic = time.perf_counter()
    for it in range(steps):
        inputs, targets = repeated_sequences(rng, batch_size, context_size, period, vocab_size)
        loss = step(inputs, targets)
        mx.eval(state)
        losses.append(loss.item())
        if verbose and (it + 1) % 50 == 0:
            floor = (period - 1) / context_size * math.log(vocab_size)
            print(f"step {it + 1}: loss {losses[-1]:.4f} (floor {floor:.4f}), {time.perf_counter() - tic:.2f} s")
    return losses


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context-size", type=int, default=32)
    ap.add_argument("--period", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=16)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--untied", action="store_true", help="a separate output projection")
    ap.add_argument("--eager", action="store_true", help="do not compile the training step")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    args = ap.parse_args()
    if args.cpu:
        mx.set_default_device(mx.cpu)
    main(steps=args.steps, batch_size=args.batch_size, context_size=args.context_size, period=args.period,
         vocab_size=args.vocab_size, num_layers=args.num_layers, dims=args.dims, num_heads=args.num_heads,
         dropout=args.dropout, tie_embeddings=not args.untied, compiled=not args.eager)
