"""Checkpoints in the Hugging Face layout: ``config.json`` plus ``model.safetensors``, or shards
``model-0000i-of-0000n.safetensors`` listed in ``model.safetensors.index.json``.

No weights can be downloaded here, so :func:`random_model` makes a model of any size with random weights in the
real layout, and :func:`save_model` writes it as a Hugging Face checkpoint that :func:`load_model` reads back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import umx as mx
from umx.utils import tree_flatten, tree_map

from .model import Model, ModelArgs

__all__ = ["load_model", "save_model", "random_model", "parameter_count", "INDEX"]

INDEX = "model.safetensors.index.json"


def random_model(config: dict, dtype=mx.float32, seed: int = 0, std: float = 0.02) -> Model:
    """A model of ``config`` whose weights are normal with standard deviation ``std`` (norm weights are ones),
    in ``dtype``.

    Args:
        config (dict): a Hugging Face ``config.json`` dict.
        dtype (Dtype): the weights' dtype. Default: ``float32``.
        seed (int): the random seed. Default: ``0``.
        std (float): the weights' standard deviation. Default: ``0.02``.

    Returns:
        Model: the model, its weights evaluated.
    """
    model = Model(config)
    key = mx.random.key(seed)
    flat = tree_flatten(model.parameters())
    keys = mx.random.split(key, len(flat))
    new = []
    for (name, p), k in zip(flat, keys):
        if name.endswith("norm.weight"):
            value = mx.ones(p.shape, dtype)
        else:
            value = (mx.random.normal(p.shape, key=k) * std).astype(dtype)
        new.append((name, value))
        mx.eval(value)  # one at a time: a large model's float32 draws would otherwise all be alive at once
    model.load_weights(new)
    return model


def save_model(path: str | Path, model: Model, config: dict, max_shard_bytes: int | None = None) -> list[Path]:
    """Write ``config.json`` and the weights of ``model`` under the directory ``path``, in shards of at most
    ``max_shard_bytes`` (one ``model.safetensors`` when None or when everything fits), with the index json when
    sharded.

    Args:
        path (str | Path): the directory (created if missing).
        model (Model): the model.
        config (dict): its ``config.json`` dict.
        max_shard_bytes (int, optional): the largest shard. Default: one file.

    Returns:
        list[Path]: the safetensors files written.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    weights = dict(tree_flatten(model.parameters()))
    shards: list[dict] = [{}]
    size = 0
    for name in sorted(weights):
        nbytes = weights[name].nbytes
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = weights[name]
        size += nbytes
    if len(shards) == 1:
        files = [path / "model.safetensors"]
    else:
        files = [path / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        weight_map = {name: f.name for f, shard in zip(files, shards) for name in shard}
        total = sum(a.nbytes for a in weights.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (path / INDEX).write_text(json.dumps(index, indent=2))
    for f, shard in zip(files, shards):
        mx.save_safetensors(str(f), shard, metadata={"format": "mlx"})
    return files


def _weight_files(path: Path) -> list[Path]:
    index = path / INDEX
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [path / name for name in sorted(set(weight_map.values()))]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {path}")
    return files


def load_model(path: str | Path, dtype=None, strict: bool = True) -> tuple[Model, dict]:
    """Build the model of ``path/config.json`` and load its safetensors weights (sharded or not).

    Args:
        path (str | Path): the checkpoint's directory.
        dtype (Dtype, optional): cast floating weights to this dtype. Default: keep the file's.
        strict (bool): every parameter must be in the files, and nothing else. Default: ``True``.

    Returns:
        tuple[Model, dict]: the model (weights evaluated) and its config dict.
    """
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    model = Model(ModelArgs.from_dict(config))
    weights: dict = {}
    for f in _weight_files(path):
        weights.update(mx.load(str(f)))
    weights = model.sanitize(weights)
    if dtype is not None:
        weights = tree_map(lambda w: w.astype(dtype) if mx.issubdtype(w.dtype, mx.floating) else w, weights)
    model.load_weights(list(weights.items()), strict=strict)
    mx.eval(model.parameters())
    return model, config


def parameter_count(model: Model) -> int:
    """The number of parameters of ``model``."""
    return sum(math.prod(p.shape) for _, p in tree_flatten(model.parameters()))
