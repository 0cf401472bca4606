"""GGUFCheckpoint: HF names, layouts and values of a LLaMA GGUF, checked three ways.

- a tiny GGUF written here with llama.cpp's own Q/K permutation: `read` must undo it exactly;
- the bundled SmolLM2 file: config and key set match the tested `smollm2_135m_instruct` preset;
- (slow) transformers' GGUF loader as the reference for dequantised, un-permuted tensors.
"""

from __future__ import annotations

import numpy as np
import pytest

from medr3_jax.models.config import ModelConfig, preset
from medr3_jax.models.gguf import GGUFCheckpoint, open_gguf


@pytest.fixture(scope="module")
def ckpt(smollm2_gguf: str) -> GGUFCheckpoint:
    return open_gguf(smollm2_gguf)


# ---- a tiny GGUF written by the test ------------------------------------------------------
_TINY = {"vocab": 40, "hidden": 32, "ffn": 64, "heads": 4, "kv_heads": 2, "head_dim": 8}


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's `permute`: HF rotate-half rows -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tiny_tensors(tied: bool) -> dict[str, np.ndarray]:
    """HF-named float32 tensors of a 1-layer LLaMA with GQA."""
    t = _TINY
    rng = np.random.default_rng(0)
    shapes = {
        "model.embed_tokens.weight": (t["vocab"], t["hidden"]),
        "model.norm.weight": (t["hidden"],),
        "model.layers.0.input_layernorm.weight": (t["hidden"],),
        "model.layers.0.post_attention_layernorm.weight": (t["hidden"],),
        "model.layers.0.self_attn.q_proj.weight": (t["heads"] * t["head_dim"], t["hidden"]),
        "model.layers.0.self_attn.k_proj.weight": (t["kv_heads"] * t["head_dim"], t["hidden"]),
        "model.layers.0.self_attn.v_proj.weight": (t["kv_heads"] * t["head_dim"], t["hidden"]),
        "model.layers.0.self_attn.o_proj.weight": (t["hidden"], t["heads"] * t["head_dim"]),
        "model.layers.0.mlp.gate_proj.weight": (t["ffn"], t["hidden"]),
        "model.layers.0.mlp.up_proj.weight": (t["ffn"], t["hidden"]),
        "model.layers.0.mlp.down_proj.weight": (t["hidden"], t["ffn"]),
    }
    if not tied:
        shapes["lm_head.weight"] = (t["vocab"], t["hidden"])
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.0.input_layernorm.weight": "blk.0.attn_norm.weight",
    "model.layers.0.post_attention_layernorm.weight": "blk.0.ffn_norm.weight",
    "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight",
    "model.layers.0.self_attn.k_proj.weight": "blk.0.attn_k.weight",
    "model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight",
    "model.layers.0.self_attn.o_proj.weight": "blk.0.attn_output.weight",
    "model.layers.0.mlp.gate_proj.weight": "blk.0.ffn_gate.weight",
    "model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight",
    "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight",
}


def _write_tiny_gguf(
    path: str, tensors: dict[str, np.ndarray], *, arch: str = "llama", extra: dict[str, np.ndarray] | None = None
) -> None:
    """Writes `tensors` the way llama.cpp's converter does (names, Q/K permutation, metadata)."""
    import gguf

    t = _TINY
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_context_length(256)
    writer.add_embedding_length(t["hidden"])
    writer.add_feed_forward_length(t["ffn"])
    writer.add_head_count(t["heads"])
    writer.add_head_count_kv(t["kv_heads"])
    writer.add_rope_dimension_count(t["head_dim"])
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(t["vocab"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    for name, value in tensors.items():
        if name.endswith("q_proj.weight"):
            value = _llama_cpp_permute(value, t["heads"])
        elif name.endswith("k_proj.weight"):
            value = _llama_cpp_permute(value, t["kv_heads"])
        writer.add_tensor(_TO_GGUF[name], value)
    for name, value in (extra or {}).items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_gguf_reads_back_hf_tensors_exactly(tmp_path, tied: bool) -> None:
    tensors = _tiny_tensors(tied)
    path = str(tmp_path / "tiny.gguf")
    _write_tiny_gguf(path, tensors)
    ckpt = open_gguf(path)
    assert sorted(ckpt.keys()) == sorted(tensors)
    for key, want in tensors.items():
        assert ckpt.shape(key) == want.shape, key
        got = ckpt.read(key)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want, err_msg=key)
    cfg = ModelConfig.from_hf_config(ckpt.hf_config, source=path)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size) == (4, 2, 8, 40)
    assert cfg.tie_word_embeddings is tied
    assert cfg.rms_norm_eps == 1e-5 and cfg.eos_token_id == (2,) and cfg.bos_token_id == 1


def test_tiny_gguf_unknown_tensor_is_named(tmp_path) -> None:
    path = str(tmp_path / "extra.gguf")
    _write_tiny_gguf(path, _tiny_tensors(True), extra={"blk.0.attn_q_norm.weight": np.ones(8, np.float32)})
    with pytest.raises(ValueError, match=r"extra\.gguf.*blk\.0\.attn_q_norm\.weight"):
        open_gguf(path)


def test_tiny_gguf_other_architecture_is_rejected(tmp_path) -> None:
    path = str(tmp_path / "qwen.gguf")
    _write_tiny_gguf(path, _tiny_tensors(True), arch="qwen2")
    with pytest.raises(ValueError, match=r"qwen\.gguf.*general\.architecture='qwen2'"):
        open_gguf(path)


def test_missing_file_names_the_path(tmp_path) -> None:
    missing = str(tmp_path / "nope.gguf")
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        open_gguf(missing)


def test_non_gguf_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"this is not a gguf file" * 10)
    with pytest.raises(ValueError, match=r"fake\.gguf: not a readable GGUF file"):
        open_gguf(str(path))


def test_truncated_gguf_names_the_path(tmp_path, smollm2_gguf: str) -> None:
    with open(smollm2_gguf, "rb") as fh:
        head = fh.read(3_000_000)  # header and metadata intact, tensor data cut short
    path = tmp_path / "cut.gguf"
    path.write_bytes(head)
    with pytest.raises(ValueError, match=r"cut\.gguf: not a readable GGUF file"):
        open_gguf(str(path))


# ---- the bundled SmolLM2 file -------------------------------------------------------------
def test_bundled_config_equals_preset(ckpt: GGUFCheckpoint) -> None:
    cfg = ModelConfig.from_hf_config(ckpt.hf_config, source=ckpt.path)
    assert cfg == preset("smollm2_135m_instruct")
    assert ckpt.hf_config["architectures"] == ["LlamaForCausalLM"]
    assert ckpt.hf_config["rope_parameters"] == {"rope_type": "default", "rope_theta": 100000.0}


def test_bundled_keys_and_shapes(ckpt: GGUFCheckpoint) -> None:
    keys = ckpt.keys()
    assert len(keys) == 2 + 30 * 9  # embed + final norm + 9 tensors per layer; lm_head tied
    assert "lm_head.weight" not in keys
    assert ckpt.shape("model.embed_tokens.weight") == (49152, 576)
    assert ckpt.shape("model.layers.29.self_attn.k_proj.weight") == (192, 576)
    assert ckpt.shape("model.layers.0.mlp.down_proj.weight") == (576, 1536)
    with pytest.raises(KeyError, match="lm_head.weight"):
        ckpt.shape("lm_head.weight")


def test_bundled_read_is_float32_and_finite(ckpt: GGUFCheckpoint) -> None:
    for key in ("model.layers.3.self_attn.q_proj.weight", "model.norm.weight"):
        value = ckpt.read(key)
        assert value.dtype == np.float32 and value.shape == ckpt.shape(key)
        assert np.isfinite(value).all() and np.abs(value).max() > 0


# ---- transformers as the reference (its GGUF loader takes ~25 s on 2 cores) ---------------
@pytest.fixture(scope="module")
def hf_reference(hf_smollm2):
    return hf_smollm2.config, {k: v.detach().numpy() for k, v in hf_smollm2.state_dict().items()}


@pytest.mark.slow
def test_tensors_match_transformers(ckpt: GGUFCheckpoint, hf_reference) -> None:
    _, state = hf_reference
    keys = [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.17.self_attn.q_proj.weight",
        "model.layers.17.self_attn.k_proj.weight",
        "model.layers.17.mlp.down_proj.weight",
        "model.layers.29.input_layernorm.weight",
    ]
    for key in keys:
        np.testing.assert_array_equal(ckpt.read(key), state[key], err_msg=key)  # same dequantiser
    assert set(ckpt.keys()) == set(state) - {"lm_head.weight"}  # transformers ties lm_head


@pytest.mark.slow
def test_hf_config_matches_transformers(ckpt: GGUFCheckpoint, hf_reference) -> None:
    config, _ = hf_reference
    ours = ckpt.hf_config
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "model_type",
        "hidden_act",
    ):
        assert ours[key] == getattr(config, key), key
    assert ours["rms_norm_eps"] == pytest.approx(config.rms_norm_eps, rel=1e-6)
    assert ours["rope_parameters"]["rope_theta"] == config.rope_parameters["rope_theta"]
