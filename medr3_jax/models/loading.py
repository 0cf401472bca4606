"""Open a model by what the user typed: a preset with bundled weights, an HF directory, or a GGUF.

model, tokenizer = load_model("smollm2_135m_instruct")           # bundled demo weights
model, tokenizer = load_model("/ckpt/Qwen2.5-7B", param_dtype="bfloat16",
                              shardings=lambda cfg: decoder_shardings(cfg, mesh))
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import jax

from medr3_jax import assets
from medr3_jax.models.config import PRESETS, ModelConfig
from medr3_jax.models.gguf import open_gguf
from medr3_jax.models.hf import SafetensorsDir, TensorSource, load_decoder
from medr3_jax.models.tokenizers import Tokenizer, load_tokenizer
from medr3_jax.models.transformer import Decoder

# Presets whose weights ship in an installed asset package.
BUNDLED_WEIGHTS: dict[str, Callable[[], str]] = {"smollm2_135m_instruct": assets.smollm2_gguf}

ShardingsFn = Callable[[ModelConfig], Mapping[str, jax.sharding.Sharding]]


def backend_overrides(
    param_dtype: str | None = None, cache_attention: str | None = None, backend: str | None = None
) -> dict[str, str]:
    """ModelConfig overrides for a run on `backend` (default: JAX's), where the user set none.

    CPU: float32, blockwise cache attention and per-layer decode weights. Accelerators:
    bfloat16, dense (windowed) cache attention, which has no loop over cache blocks (on an H100
    its decode steps were 1.3-1.75x faster than blockwise's; on CPU it was no faster), and
    stacked decode weights (no second copy of the weights in accelerator memory). On CPU,
    per-layer weights made SmolLM2-135M decode steps 1.2x faster (bench/sampler.py, batch 32:
    ~195 -> ~160 ms before keys were stored slots-minor).
    """
    accelerator = (backend or jax.default_backend()) != "cpu"
    dtype = param_dtype or ("bfloat16" if accelerator else "float32")
    attention = cache_attention or ("dense" if accelerator else "blockwise")
    weights = "stacked" if accelerator else "per_layer"
    return {"param_dtype": dtype, "compute_dtype": dtype, "cache_attention": attention, "decode_weights": weights}


def open_checkpoint(name_or_path: str, **overrides: Any) -> tuple[ModelConfig, TensorSource, str]:
    """(config, tensor source, tokenizer path) for a bundled preset, an HF dir or a .gguf file."""
    path = name_or_path
    if name_or_path in BUNDLED_WEIGHTS:
        path = BUNDLED_WEIGHTS[name_or_path]()
    elif name_or_path in PRESETS:
        raise FileNotFoundError(
            f"preset {name_or_path!r} has no bundled weights; pass the HF directory of its checkpoint "
            f"(bundled: {sorted(BUNDLED_WEIGHTS)})"
        )
    if path.endswith(".gguf"):
        ckpt = open_gguf(path)
        return ModelConfig.from_hf_config(ckpt.hf_config, source=path, **overrides), ckpt, path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a model preset ({sorted(PRESETS)}), HF directory or .gguf file")
    return ModelConfig.from_hf_dir(path, **overrides), SafetensorsDir(path), path


def load_model(
    name_or_path: str, *, shardings: ShardingsFn | None = None, **overrides: Any
) -> tuple[Decoder, Tokenizer]:
    """The Decoder (params streamed onto `shardings(config)`) and its tokenizer.

    `random:<preset>` (e.g. `random:tiny`) builds the preset with random weights and the byte
    tokenizer (vocabulary 256): for smoke runs and tests, never for real training.
    """
    if name_or_path.startswith("random:"):
        return _random_model(name_or_path.removeprefix("random:"), shardings, **overrides)
    config, source, tokenizer_path = open_checkpoint(name_or_path, **overrides)
    model = load_decoder(source, config, shardings(config) if shardings else None)
    return model, load_tokenizer(tokenizer_path)


def _random_model(preset_name: str, shardings: ShardingsFn | None, **overrides: Any) -> tuple[Decoder, Tokenizer]:
    from flax import nnx  # noqa: PLC0415

    from medr3_jax.models.tokenizers import byte_tokenizer  # noqa: PLC0415

    if preset_name not in PRESETS:
        raise FileNotFoundError(f"random:{preset_name}: no such preset ({sorted(PRESETS)})")
    config = PRESETS[preset_name].replace(**overrides)
    if config.vocab_size < 256:
        raise ValueError(f"random:{preset_name}: vocab_size {config.vocab_size} < 256 cannot hold the byte tokenizer")
    model = Decoder(config, rngs=nnx.Rngs(0))
    if shardings is not None:
        graphdef, state = nnx.split(model)
        placed = shardings(config)
        flat = {"/".join(str(k) for k in path): v for path, v in state.flat_state()}
        for name, value in flat.items():
            if name in placed:
                value.value = jax.device_put(value.value, placed[name])
        model = nnx.merge(graphdef, state)
    return model, byte_tokenizer()
