"""Language models on umx: Llama-family models, key-value caches, Hugging Face checkpoints, sampling and
streaming generation (``python -m examples.llm``)."""

from .cache import KVCache, StaticKVCache, make_cache
from .generate import GenerationResponse, generate, generate_step, make_sampler, stream_generate
from .model import Model, ModelArgs, fuse_projections
from .presets import PRESETS, llama_config
from .weights import load_model, parameter_count, random_model, save_model
