"""HF checkpoint conversion: export loads in transformers with equal logits, import -> export is
bit-exact, sharded directories, and bad checkpoints fail naming file and tensor."""

from __future__ import annotations

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from medr3_jax.models.config import ConfigError, ModelConfig
from medr3_jax.models.hf import CheckpointError, SafetensorsDir, load_decoder, save_hf
from tests.models import hf_reference as ref
from tests.models.test_transformer import padded_batch


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    model = ref.build_hf_model(ref.tiny_qwen2_config(), seed=2)
    return ref.save_hf_model(model, str(tmp_path_factory.mktemp("qwen")))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    model = ref.build_hf_model(ref.tiny_llama3_config(), seed=4)
    return ref.save_hf_model(model, str(tmp_path_factory.mktemp("llama")))


def _tensors(path: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            out |= load_file(os.path.join(path, name))
    return out


@pytest.mark.parametrize("which", ["qwen", "llama"])
def test_import_export_is_bit_exact(which, qwen_dir, llama_dir, tmp_path):
    src = qwen_dir if which == "qwen" else llama_dir
    model = load_decoder(SafetensorsDir(src), ModelConfig.from_hf_dir(src))
    save_hf(model, tmp_path / "out")
    theirs, ours = _tensors(src), _tensors(str(tmp_path / "out"))
    if model.config.tie_word_embeddings:
        theirs.pop("lm_head.weight", None)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


def test_export_loads_in_transformers_with_same_logits(llama_dir, tmp_path):
    import transformers  # noqa: PLC0415

    model = load_decoder(SafetensorsDir(llama_dir), ModelConfig.from_hf_dir(llama_dir))
    save_hf(model, tmp_path / "out", max_shard_bytes=20_000)  # force several shard files
    files = os.listdir(tmp_path / "out")
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").float().eval()
    tokens, mask, positions = padded_batch(model.config.vocab_size, [8, 3], 8, left=True)
    ours, _ = model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    theirs = ref.hf_logits(reloaded, tokens, mask, positions)
    assert np.abs(np.asarray(ours) - theirs)[mask].max() <= 1e-4
    # ... and our loader reads the sharded directory back identically.
    again = load_decoder(SafetensorsDir(tmp_path / "out"), model.config)
    np.testing.assert_array_equal(again.layers.q_proj[...], model.layers.q_proj[...])


def test_unsupported_architecture_names_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"], "hidden_size": 8}))
    with pytest.raises(ConfigError, match=r"config\.json.*MistralForCausalLM"):
        ModelConfig.from_hf_dir(tmp_path)


def test_unsupported_rope_type_names_field(tmp_path):
    cfg = ref.tiny_llama3_config() | {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="yarn"):
        ModelConfig.from_hf_dir(tmp_path)


def _broken_copy(src: str, dst: str, edit) -> str:
    shutil.copytree(src, dst)
    tensors = load_file(os.path.join(dst, "model.safetensors"))
    edit(tensors)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    return dst


def test_missing_tensor_names_file_and_tensor(llama_dir, tmp_path):
    key = "model.layers.1.mlp.up_proj.weight"
    path = _broken_copy(llama_dir, str(tmp_path / "m"), lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=rf"model\.safetensors.*missing tensor '{key}'"):
        load_decoder(SafetensorsDir(path), ModelConfig.from_hf_dir(path))


def test_shape_mismatch_names_file_and_tensor(llama_dir, tmp_path):
    key = "model.layers.0.self_attn.k_proj.weight"
    path = _broken_copy(llama_dir, str(tmp_path / "m"), lambda t: t.update({key: t[key][:-1]}))
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: tensor '{key}' has shape \(23, 48\)"):
        load_decoder(SafetensorsDir(path), ModelConfig.from_hf_dir(path))


def test_missing_directory_contents(tmp_path):
    with pytest.raises(CheckpointError, match="neither model.safetensors"):
        SafetensorsDir(tmp_path)
