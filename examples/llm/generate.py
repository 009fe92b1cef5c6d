"""Sampling and streaming generation.

``generate_step`` runs the prompt through the model once (prefill), then one token at a time (decode), yielding
each token as soon as it is known. Decode is eager (a growing ``KVCache``, the step's graph built by Python for
every token) or compiled (a ``StaticKVCache`` of the final length, the step traced once by ``mx.compile`` and
replayed: the token, the position and the cache buffers are the compiled function's inputs and outputs). The
prompt's token is yielded as soon as the prompt is processed; after it, while the host reads token ``n``, token
``n + 1`` is already being computed (``mx.async_eval``), as mlx-lm does, when the model runs on the GPU. On the
CPU the caller computes each step itself (``mx.eval``): a worker thread would overlap little there, since a small
model's ops are Python work that holds the GIL, and would add two thread hand-offs per token.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import umx as mx
from umx.utils import tree_flatten

from .cache import make_cache

__all__ = ["greedy", "make_sampler", "top_p_sample", "generate_step", "stream_generate", "generate",
           "GenerationResponse"]


def greedy(logits: mx.array) -> mx.array:
    """The most likely token of each row of ``logits`` (``[B, V]`` -> ``[B]``)."""
    return mx.argmax(logits, axis=-1)


def top_p_sample(logits: mx.array, temperature: float, top_p: float, key: mx.array | None = None) -> mx.array:
    """Sample from the smallest set of most likely tokens whose probabilities add up to at least ``top_p``
    (nucleus sampling), after dividing the logits by ``temperature``.

    Args:
        logits (array): ``[B, V]`` unnormalized log-probabilities.
        temperature (float): > 0; lower is greedier.
        top_p (float): in (0, 1]; 1 samples from every token.
        key (array, optional): a random key; default: the global key.

    Returns:
        array: ``[B]`` token ids (uint32).
    """
    logits = logits.astype(mx.float32) * (1 / temperature)
    if top_p >= 1.0:
        return mx.random.categorical(logits, axis=-1, key=key)
    order = mx.argsort(-logits, axis=-1)  # most likely first
    ranked = mx.take_along_axis(logits, order, axis=-1)
    probs = mx.softmax(ranked, axis=-1)
    before = mx.cumsum(probs, axis=-1) - probs  # the mass of the tokens ranked above each one
    ranked = mx.where(before < top_p, ranked, -mx.inf)  # the top token always stays (before == 0)
    pick = mx.random.categorical(ranked, axis=-1, key=key)
    return mx.take_along_axis(order, pick[:, None], axis=-1)[:, 0]


@functools.lru_cache(maxsize=32)
def make_sampler(temperature: float = 0.0, top_p: float = 1.0) -> Callable[[mx.array], mx.array]:
    """A sampler ``logits [B, V] -> tokens [B]``: greedy at temperature 0, else :func:`top_p_sample`. The same
    arguments give the same sampler, so a compiled decode step made for it is found again."""
    if temperature == 0:
        return greedy
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return lambda logits: top_p_sample(logits, temperature, top_p)


def _eager_decoder(model, cache: list, sampler) -> Callable:
    def step(y: mx.array) -> mx.array:
        return sampler(model(y[:, None], cache=cache)[:, -1, :])

    return step


def _compiled_decoder(model, cache: list, sampler, compiled: bool) -> Callable:
    """A decode step over ``StaticKVCache`` whose inputs and outputs are arrays only (the token, the shared
    position, the buffers), so that ``mx.compile`` traces it once and replays it for every token: and for every
    later generation with the same model and sampler (see :func:`_pure_step`)."""
    fn = _pure_step(model, sampler, compiled)

    def step(y: mx.array) -> mx.array:
        y, offset, buffers = fn(y, cache[0].offset, [(c.keys, c.values) for c in cache])
        for c, (k, v) in zip(cache, buffers):
            c.keys, c.values, c.offset = k, v, offset
        return y

    return step


class _Steps:
    """The decode steps made for one model (an attribute of it, so that they go with it), and the ids of the
    parameters they were traced with."""

    def __init__(self, params: tuple):
        self.params = params
        self.by_kind: dict = {}  # (sampler, compiled) -> step


def _pure_step(model, sampler, compiled: bool) -> Callable:
    """``(token, position, buffers) -> (next token, position + 1, buffers)`` for ``model``: made once per model,
    sampler and mode, so that a second generation replays the first's trace instead of tracing again; made
    again if the model's parameters were replaced (a trace holds them as they were)."""
    params = tuple(id(a) for _, a in tree_flatten(model.parameters()))
    steps = getattr(model, "_umx_decode_steps", None)
    if steps is None or steps.params != params:
        steps = _Steps(params)
        model._umx_decode_steps = steps  # (a plain attribute: not a parameter or child of the module)
    fn = steps.by_kind.get((sampler, compiled))
    if fn is None:
        if len(steps.by_kind) >= 8:  # (a caller that makes a sampler per call: keep the last few)
            steps.by_kind.clear()
        scratch = make_cache(len(model.layers), 1)  # (filled from the arguments at every call)

        def pure_step(y, offset, buffers):
            for c, (k, v) in zip(scratch, buffers):
                c.keys, c.values, c.offset, c.max_size = k, v, offset, k.shape[2]
            logits = model(y[:, None], cache=scratch)
            return sampler(logits[:, -1, :]), offset + 1, [(c.keys, c.values) for c in scratch]

        fn = steps.by_kind[(sampler, compiled)] = mx.compile(pure_step) if compiled else pure_step
    return fn


def generate_step(prompt: mx.array, model, *, max_tokens: int = 256, sampler: Callable | None = None,
                  compiled: bool = False, static_cache: bool | None = None) -> Iterator[int]:
    """Yield the tokens that follow ``prompt``, one at a time, as they are computed.

    Args:
        prompt (array): int token ids, ``[L]``.
        model (Model): the language model.
        max_tokens (int): how many tokens to generate. Default: ``256``.
        sampler (Callable, optional): ``logits [B, V] -> tokens [B]``. Default: :func:`greedy`.
        compiled (bool): compile the decode step (``mx.compile``; implies a static cache). Default: ``False``.
        static_cache (bool, optional): use a ``StaticKVCache`` of ``len(prompt) + max_tokens`` positions (the
            compiled step's cache) even when not compiling. Default: ``compiled``.

    Yields:
        int: token ids.
    """
    sampler = sampler or greedy
    static = compiled if static_cache is None else static_cache
    n_layers = len(model.layers)
    cache = make_cache(n_layers, prompt.shape[0] + max_tokens if static else None)
    if max_tokens <= 0:
        return
    logits = model(prompt[None], cache=cache)
    if static:
        offset = cache[0].offset + prompt.shape[0]
        for c in cache:
            c.offset = offset  # one position array shared by every layer
        step = _compiled_decoder(model, cache, sampler, compiled)
    else:
        step = _eager_decoder(model, cache, sampler)
    y = sampler(logits[:, -1, :])
    start = mx.async_eval if mx.default_device() == mx.gpu else mx.eval
    # The prompt's token comes as soon as the prompt is processed (the time to the first token is the prompt's
    # alone); from then on each step is built and started before the previous token is read, so that the host
    # builds one step while the device computes the other.
    yield y.item()
    if max_tokens > 1:
        y = step(y)
        start(y)
    for n in range(1, max_tokens):
        if n + 1 < max_tokens:
            next_y = step(y)
            start(next_y)
        yield y.item()
        if n + 1 < max_tokens:
            y = next_y


@dataclass
class GenerationResponse:
    """One step of :func:`stream_generate`.

    Attributes:
        token (int): the token just generated.
        text (str): its text (empty without a tokenizer).
        prompt_tokens (int): the prompt's length.
        prompt_tps (float): prompt tokens per second (prefill, including the first token).
        generation_tokens (int): tokens generated so far.
        generation_tps (float): tokens per second since the first token.
        peak_memory (float): peak memory so far, in GB.
        finish_reason (str | None): ``"length"`` or ``"stop"`` on the last response, else None.
    """

    token: int
    text: str
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    peak_memory: float
    finish_reason: str | None = None


def stream_generate(model, prompt: list[int] | mx.array, max_tokens: int = 256, *, sampler: Callable | None = None,
                    compiled: bool = False, eos_token_ids: set[int] | frozenset = frozenset(),
                    decode: Callable[[list[int]], str] | None = None) -> Iterator[GenerationResponse]:
    """Generate from ``prompt`` and yield a :class:`GenerationResponse` per token, with the speeds so far.

    Args:
        model (Model): the language model.
        prompt (list[int] | array): token ids.
        max_tokens (int): the most tokens to generate. Default: ``256``.
        sampler (Callable, optional): see :func:`generate_step`. Default: greedy.
        compiled (bool): compile the decode step. Default: ``False``.
        eos_token_ids (set[int]): tokens that end generation (yielded, with ``finish_reason="stop"``).
        decode (Callable, optional): token ids -> text, for each response's ``text``.

    Yields:
        GenerationResponse: one per token.
    """
    prompt = prompt if isinstance(prompt, mx.array) else mx.array(prompt, mx.int32)
    n_prompt = prompt.shape[0]
    mx.reset_peak_memory()
    start = time.perf_counter()
    prompt_tps = 0.0
    tokens: list[int] = []
    for n, token in enumerate(generate_step(prompt, model, max_tokens=max_tokens, sampler=sampler,
                                            compiled=compiled)):
        if n == 0:
            prompt_time = time.perf_counter() - start
            prompt_tps = n_prompt / prompt_time
            start = time.perf_counter()
        tokens.append(token)
        elapsed = time.perf_counter() - start
        generation_tps = n / elapsed if n else 0.0
        finish = "stop" if token in eos_token_ids else ("length" if n + 1 == max_tokens else None)
        text = decode([token]) if decode is not None else ""
        yield GenerationResponse(token, text, n_prompt, prompt_tps, n + 1, generation_tps,
                                 mx.get_peak_memory() / 1e9, finish)
        if finish is not None:
            break


def generate(model, prompt: list[int] | mx.array, max_tokens: int = 256, **kwargs) -> list[int]:
    """The tokens :func:`stream_generate` yields, as a list."""
    return [r.token for r in stream_generate(model, prompt, max_tokens, **kwargs)]

