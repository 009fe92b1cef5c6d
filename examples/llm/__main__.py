"""Generate text with a Llama-family model on umx.

    python -m examples.llm --model path/to/checkpoint --prompt "Once upon a time" --max-tokens 64
    python -m examples.llm --random tiny --prompt-ids 1,2,3 --compile       # random weights, no download

A checkpoint is a Hugging Face directory: ``config.json`` and safetensors weights (sharded or not). Text is
tokenized with the directory's ``tokenizer.json`` when the ``tokenizers`` package is installed, else as UTF-8
bytes (token id = byte value). ``--random SIZE`` writes a model of that size with random weights to ``--model``
(or a temporary directory) and loads it back, as a real checkpoint would be.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import umx as mx

from .generate import make_sampler, stream_generate
from .model import fuse_projections
from .presets import PRESETS
from .weights import load_model, random_model, save_model


class _Bytes:
    """UTF-8 bytes as tokens: the tokenizer of a checkpoint that has none."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode(errors="replace")


def _tokenizer(path: Path):
    file = path / "tokenizer.json"
    if file.exists():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            print("tokenizer.json found but the tokenizers package is missing: using bytes", file=sys.stderr)
        else:
            tok = Tokenizer.from_file(str(file))
            return type("HFTokenizer", (), {"encode": lambda self, t: tok.encode(t).ids,
                                             "decode": lambda self, ids: tok.decode(ids)})()
    return _Bytes()


def main(argv: list[str] | None = None) -> None:
    """The command line: see the module's docstring."""
    p = argparse.ArgumentParser(prog="python -m examples.llm", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="checkpoint directory (written there with --random)")
    p.add_argument("--random", choices=sorted(PRESETS), help="make a model of this size with random weights")
    p.add_argument("--prompt", default="Hello", help="the prompt's text")
    p.add_argument("--prompt-ids", help="the prompt as comma-separated token ids (instead of --prompt)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="compile the decode step (static cache)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="cast the weights")
    p.add_argument("--device", choices=("cpu", "gpu"), help="default: umx's default device")
    args = p.parse_args(argv)
    if args.random is None and args.model is None:
        p.error("give --model, or --random SIZE")
    if args.device:
        mx.set_default_device(getattr(mx, args.device))
    mx.random.seed(args.seed)
    dtype = getattr(mx, args.dtype) if args.dtype else None

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or Path(tmp)
        if args.random:
            config = PRESETS[args.random]
            save_model(path, random_model(config, dtype or mx.float32, seed=args.seed), config)
        model, config = load_model(path, dtype=dtype)
    fuse_projections(model)
    tokenizer = _tokenizer(path) if args.model else _Bytes()
    if args.prompt_ids:
        prompt = [int(t) for t in args.prompt_ids.split(",")]
    else:
        prompt = tokenizer.encode(args.prompt)
    eos = config.get("eos_token_id")
    eos = set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())

    response = None
    tokens: list[int] = []
    shown = ""
    for response in stream_generate(model, prompt, args.max_tokens, compiled=args.compile, eos_token_ids=eos,
                                    sampler=make_sampler(args.temp, args.top_p)):
        tokens.append(response.token)
        if args.prompt_ids:  # ids in, ids out
            print(response.token, end=" ", flush=True)
            continue
        text = tokenizer.decode(tokens)
        print(text[len(shown):], end="", flush=True)
        shown = text
    print()
    if response is not None:
        print(f"prompt: {response.prompt_tokens} tokens, {response.prompt_tps:.1f} tokens/s", file=sys.stderr)
        print(f"generation: {response.generation_tokens} tokens, {response.generation_tps:.1f} tokens/s "
              f"({'compiled' if args.compile else 'eager'} decode)", file=sys.stderr)
        print(f"peak memory: {response.peak_memory:.3f} GB", file=sys.stderr)


if __name__ == "__main__":
    main()
