"""ModelConfig: presets against published parameter counts, both RoPE spellings, round trips."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import transformers

from medr3_jax.models.config import PRESETS, ConfigError, ModelConfig, preset, rope_inv_freq
from medr3_jax.models.transformer import abstract_decoder

# Parameter counts published on the model cards / computed by transformers for these checkpoints.
PUBLISHED = {
    "llama3_1_8b_instruct": 8_030_261_248,
    "qwen2_5_7b": 7_615_616_512,
    "qwen2_5_14b": 14_770_033_664,
    "smollm2_135m_instruct": 134_515_008,
    "qwen2_5_1_5b": 1_543_714_304,
    "llama3_2_1b": 1_235_814_400,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_match_published(name):
    assert PRESETS[name].num_params == PUBLISHED[name]


def test_decoder_state_size_equals_config_count():
    _, state = abstract_decoder(preset("llama3_1_8b_instruct"))  # shapes only, nothing allocated
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
    assert total == PUBLISHED["llama3_1_8b_instruct"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_hf_round_trip(name):
    cfg = PRESETS[name]
    assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg


def test_legacy_and_transformers5_rope_spellings_agree():
    base = PRESETS["llama3_1_8b_instruct"].to_hf_config()
    new = {k: v for k, v in base.items() if k not in ("rope_scaling", "rope_theta")}
    old = {k: v for k, v in base.items() if k != "rope_parameters"}
    old["rope_scaling"] = {k: v for k, v in old["rope_scaling"].items() if k != "rope_theta"} | {"type": "llama3"}
    del old["rope_scaling"]["rope_type"]
    assert ModelConfig.from_hf_config(new) == ModelConfig.from_hf_config(old) == PRESETS["llama3_1_8b_instruct"]


@pytest.mark.parametrize("name", ["llama3_1_8b_instruct", "tiny", "qwen2_5_7b"])
def test_rope_inv_freq_matches_transformers(name):
    cfg = PRESETS[name]
    hf_config = transformers.AutoConfig.for_model(**cfg.to_hf_config())
    rope_type = cfg.rope_scaling.rope_type if cfg.rope_scaling else "default"
    if rope_type == "default":
        dim = cfg.head_dim
        want = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2) / dim))
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: PLC0415

        want, _ = ROPE_INIT_FUNCTIONS[rope_type](hf_config, "cpu")
        want = want.numpy()
    np.testing.assert_allclose(rope_inv_freq(cfg), want, rtol=1e-6)


def test_bad_configs_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="num_heads=6 is not a multiple of num_kv_heads=4"):
        preset("tiny", num_heads=6, num_kv_heads=4)
    with pytest.raises(ConfigError, match=r"cfg\.json: missing field 'num_attention_heads'"):
        ModelConfig.from_hf_config({"model_type": "llama", "hidden_size": 8}, source="cfg.json")
    with pytest.raises(ConfigError, match="no such file"):
        ModelConfig.from_hf_dir(tmp_path)
    with pytest.raises(ConfigError, match="cache_attention='flash'"):
        preset("tiny", cache_attention="flash")
    with pytest.raises(ConfigError, match="decode_weights='unrolled'"):
        preset("tiny", decode_weights="unrolled")
    with pytest.raises(ConfigError, match=r"layer_unroll=0 must be in \[1, num_layers="):
        preset("tiny", layer_unroll=0)
    with pytest.raises(KeyError, match="unknown model preset 'gpt5'"):
        preset("gpt5")


def test_backend_overrides_choose_by_backend_and_keep_what_the_user_set():
    from medr3_jax.models.loading import backend_overrides  # noqa: PLC0415

    assert backend_overrides(backend="cpu") == {
        "param_dtype": "float32",
        "compute_dtype": "float32",
        "cache_attention": "blockwise",
        "decode_weights": "per_layer",
    }
    assert backend_overrides(backend="gpu") == {
        "param_dtype": "bfloat16",
        "compute_dtype": "bfloat16",
        "cache_attention": "dense",
        "decode_weights": "stacked",
    }
    assert backend_overrides("float32", "blockwise", backend="tpu") == backend_overrides(backend="cpu") | {
        "decode_weights": "stacked"
    }
