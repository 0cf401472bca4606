"""`python -m medr3_jax.export`: a training checkpoint becomes an HF directory that our loader
and transformers both read with the same logits; tokenizer files travel along; errors exit 2."""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from medr3_jax import export
from medr3_jax.models.config import preset
from medr3_jax.models.loading import load_model
from medr3_jax.models.transformer import Decoder
from medr3_jax.trainer.checkpoints import CheckpointConfig, Checkpointer, checkpoint_meta

CONFIG = preset("tiny")


def _tokenizer_dir(folder) -> str:
    """A minimal HF tokenizer directory (word-level, 4 tokens + eos)."""
    import tokenizers  # noqa: PLC0415

    folder.mkdir()
    vocab = {"<unk>": 0, "<eos>": 1, "fever": 2, "cough": 3, "rash": 4}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>", "unk_token": "<unk>"}))
    (folder / "config.json").write_text("{}")  # a model's config.json must never be copied over ours
    return str(folder)


def _save_checkpoint(workdir, model: Decoder, tokenizer: str, step: int = 4) -> str:
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state = {
        "params": params,
        "opt_state": optax.adamw(1e-3).init(params),
        "rng": jax.random.key_data(jax.random.key(0)),
    }
    meta = checkpoint_meta(
        step=step, stage="joint", data_position=0, model_config=CONFIG, tokenizer=tokenizer, operative_config=""
    )
    directory = workdir / "checkpoints"
    with Checkpointer(directory, CheckpointConfig(every_steps=1, async_save=False)) as ckpt:
        ckpt.save(step, state, meta)
    return str(directory)


@pytest.fixture(scope="module")
def model() -> Decoder:
    return Decoder(CONFIG, rngs=nnx.Rngs(7))


def _inputs():
    tokens = jnp.asarray([[5, 17, 200, 3, 9, 64, 1, 255], [2, 2, 8, 120, 33, 0, 4, 6]], jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
    return tokens, positions, jnp.ones((2, 8), bool)


def test_export_round_trip(model, tmp_path, capsys) -> None:
    ckpt_dir = _save_checkpoint(tmp_path / "run", model, _tokenizer_dir(tmp_path / "tok"))
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", ckpt_dir, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]

    want = np.asarray(model(*_inputs())[0])
    loaded, tokenizer = load_model(str(out))
    assert loaded.config == CONFIG
    assert tokenizer.eos_id == 1 and tokenizer.encode("fever rash") == [2, 4]
    np.testing.assert_allclose(np.asarray(loaded(*_inputs())[0]), want, atol=1e-6, rtol=0)

    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    hf = transformers.LlamaForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    tokens, _, _ = _inputs()
    with torch.no_grad():
        theirs = hf(torch.tensor(np.array(tokens), dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(theirs, want, atol=1e-4, rtol=0)


def test_export_step_and_gguf_tokenizer(model, tmp_path, caplog) -> None:
    ckpt_dir = _save_checkpoint(tmp_path / "run", model, "/models/demo.Q4_1.gguf", step=3)
    out = tmp_path / "hf"
    with caplog.at_level(logging.INFO, logger="medr3_jax.export"):
        assert export.main(["--checkpoint", ckpt_dir, "--step", "3", "--out", str(out)]) == 0
    assert "tokenizer lives in the GGUF /models/demo.Q4_1.gguf" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_export_errors_exit_2(model, tmp_path, capsys) -> None:
    missing = tmp_path / "nothing"
    assert export.main(["--checkpoint", str(missing), "--out", str(tmp_path / "hf")]) == 2
    assert str(missing) in capsys.readouterr().err
    ckpt_dir = _save_checkpoint(tmp_path / "run", model, "")
    assert export.main(["--checkpoint", ckpt_dir, "--step", "9", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert ckpt_dir in err and "step 9" in err
    assert not (tmp_path / "hf").exists()
