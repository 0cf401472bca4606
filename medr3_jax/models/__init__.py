"""Models: LLaMA/Qwen2 decoder, its config and presets, checkpoint conversion, tokenizers."""

from medr3_jax.models.config import PRESETS, ConfigError, ModelConfig, RopeScaling, preset
from medr3_jax.models.transformer import Decoder, KVCache, abstract_decoder, param_shapes

__all__ = [
    "PRESETS",
    "ConfigError",
    "Decoder",
    "KVCache",
    "ModelConfig",
    "RopeScaling",
    "abstract_decoder",
    "param_shapes",
    "preset",
]
