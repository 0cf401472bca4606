"""`python -m medr3_jax.export`: a training checkpoint becomes a complete HF directory that our
loader and transformers both read with the same logits; for a GGUF tokenizer (the bundled
SmolLM2's) AutoTokenizer, AutoModelForCausalLM and pipeline("text-generation") reproduce our
tokens and our Sampler's greedy continuation; a run workdir exports its latest stage; errors
exit 2 and write nothing."""

from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from medr3_jax import export
from medr3_jax.models.config import preset
from medr3_jax.models.loading import load_model
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.models.transformer import Decoder
from medr3_jax.sampling import GREEDY, Sampler
from medr3_jax.trainer.checkpoints import CheckpointConfig, Checkpointer, checkpoint_meta
from medr3_jax.trainer.tokenizer_copy import save_tokenizer_copy

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


def _save_checkpoint(workdir, model: Decoder, tokenizer: str, step: int = 4, stage: str = "joint") -> str:
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state = {
        "params": params,
        "opt_state": optax.adamw(1e-3).init(params),
        "rng": jax.random.key_data(jax.random.key(0)),
    }
    meta = checkpoint_meta(
        step=step, stage=stage, data_position=0, model_config=model.config, tokenizer=tokenizer, operative_config=""
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
    assert names == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",  # the source has none: written from its tokenizer
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"eos_token": "<eos>", "unk_token": "<unk>"}
    assert json.loads((out / "generation_config.json").read_text()) == {"eos_token_id": 1, "pad_token_id": 1}

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


def test_export_errors_exit_2(model, tmp_path, capsys) -> None:
    missing = tmp_path / "nothing"
    assert export.main(["--checkpoint", str(missing), "--out", str(tmp_path / "hf")]) == 2
    assert str(missing) in capsys.readouterr().err
    ckpt_dir = _save_checkpoint(tmp_path / "run", model, "")
    assert export.main(["--checkpoint", ckpt_dir, "--step", "9", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert ckpt_dir in err and "step 9" in err
    assert not (tmp_path / "hf").exists()


def test_export_refuses_an_unreadable_tokenizer(model, tmp_path, capsys) -> None:
    """A tokenizer that is not there (or none named) exits 2 before anything is written;
    --tokenizer names one instead."""
    gone = "/models/demo.Q4_1.gguf"
    ckpt_dir = _save_checkpoint(tmp_path / "run", model, gone, step=3)
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", ckpt_dir, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert gone in err and "--tokenizer" in err
    assert not out.exists()
    assert export.main(["--checkpoint", ckpt_dir, "--tokenizer", "", "--out", str(out)]) == 2
    assert "names no tokenizer" in capsys.readouterr().err
    assert (
        export.main(["--checkpoint", ckpt_dir, "--tokenizer", _tokenizer_dir(tmp_path / "tok"), "--out", str(out)]) == 0
    )
    assert load_model(str(out))[1].encode("cough") == [3]


def test_export_of_a_random_weight_run_ships_the_byte_tokenizer(model, tmp_path) -> None:
    import transformers  # noqa: PLC0415

    ckpt_dir = _save_checkpoint(tmp_path / "run", model, export.BYTES_TOKENIZER)
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", ckpt_dir, "--out", str(out)]) == 0
    ours = byte_tokenizer()
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    text = "fever 39.5 °C\n"
    assert hf(text)["input_ids"] == ours.encode(text) == list(text.encode("utf-8"))
    assert hf.decode(ours.encode(text)) == text
    assert json.loads((out / "generation_config.json").read_text()) == {"eos_token_id": 0, "pad_token_id": 0}


# ---- a run workdir -----------------------------------------------------------------------------------
def test_export_run_workdir_takes_latest_stage_and_step(tmp_path, caplog, capsys) -> None:
    """stage1 and stage3 have checkpoints, stage2 only logs: stage3's latest step is exported."""
    run = tmp_path / "run"
    models = [Decoder(CONFIG, rngs=nnx.Rngs(seed)) for seed in (11, 12, 13)]
    tok = _tokenizer_dir(tmp_path / "tok")
    _save_checkpoint(run / "stage1", models[0], tok, step=9, stage="stage1")
    (run / "stage2" / "tb").mkdir(parents=True)
    _save_checkpoint(run / "stage3", models[1], tok, step=4, stage="stage3")
    _save_checkpoint(run / "stage3", models[2], tok, step=6, stage="stage3")
    out = tmp_path / "hf"
    with caplog.at_level(logging.INFO):
        assert export.main(["--checkpoint", str(run), "--out", str(out)]) == 0
    assert "taking stage3 (the latest stage with checkpoints; its latest step is 6)" in caplog.text
    loaded, _ = load_model(str(out))
    np.testing.assert_array_equal(np.asarray(loaded(*_inputs())[0]), np.asarray(models[2](*_inputs())[0]))

    assert export.main(["--checkpoint", str(run), "--step", "4", "--out", str(tmp_path / "hf4")]) == 0
    loaded, _ = load_model(str(tmp_path / "hf4"))
    np.testing.assert_array_equal(np.asarray(loaded(*_inputs())[0]), np.asarray(models[1](*_inputs())[0]))
    step_dir = run / "stage1" / "checkpoints" / "9"  # one step directory
    assert export.main(["--checkpoint", str(step_dir), "--out", str(tmp_path / "hf9")]) == 0
    loaded, _ = load_model(str(tmp_path / "hf9"))
    np.testing.assert_array_equal(np.asarray(loaded(*_inputs())[0]), np.asarray(models[0](*_inputs())[0]))

    empty = tmp_path / "empty"
    (empty / "stage1" / "tb").mkdir(parents=True)
    (empty / "stage2" / "checkpoints").mkdir(parents=True)
    capsys.readouterr()
    assert export.main(["--checkpoint", str(empty), "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "stage1, stage2" in err
    assert not (tmp_path / "none").exists()


# ---- GGUF tokenizer (the bundled SmolLM2's) -> a complete HF directory ----------------------------------
SMOL_CONFIG = preset("tiny", vocab_size=49152)  # SmolLM2's vocabulary; random weights keep it cheap
CHAT = [{"role": "user", "content": "Which vitamin deficiency causes scurvy?"}]
NEW_TOKENS = 12


@pytest.fixture(scope="module", params=["recorded", "copy"])
def smol_export(request, tmp_path_factory, smollm2_gguf, smollm2_tokenizer):
    """(our Decoder, our Tokenizer, export dir) of a stage1 checkpoint in a run workdir whose
    tokenizer is the bundled GGUF: "recorded", at the path its meta records; "copy", trained on
    another machine (the recorded path is not here), from the run's copy beside the checkpoints
    (`trainer.tokenizer_copy`, which the trainer writes at each stage's start)."""
    model = Decoder(SMOL_CONFIG, rngs=nnx.Rngs(3))
    root = tmp_path_factory.mktemp("smol")
    recorded = smollm2_gguf if request.param == "recorded" else "/elsewhere/SmolLM2-135M-Instruct.gguf"
    _save_checkpoint(root / "run" / "stage1", model, recorded, step=2, stage="stage1")
    if request.param == "copy":
        save_tokenizer_copy(smollm2_tokenizer, str(root / "run" / "stage1"))
    out = root / "hf"
    assert export.main(["--checkpoint", str(root / "run"), "--out", str(out)]) == 0
    return model, smollm2_tokenizer, str(out)


def test_gguf_export_files(smol_export) -> None:
    import transformers  # noqa: PLC0415

    _, tok, out = smol_export
    assert sorted(os.listdir(out)) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    gen = transformers.GenerationConfig.from_pretrained(out)
    assert (gen.eos_token_id, gen.pad_token_id, gen.bos_token_id) == (list(tok.stop_ids), tok.pad_id, tok.bos_id)
    assert len(tok.stop_ids) > 1  # <|im_end|> and <|endoftext|>: every stop id, eos first


def test_gguf_export_tokenizer_matches_ours(smol_export) -> None:
    import transformers  # noqa: PLC0415

    _, tok, out = smol_export
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert len(hf) == tok.vocab_size
    names = {"bos_token": tok.bos_id, "eos_token": tok.eos_id, "pad_token": tok.pad_id, "unk_token": tok.unk_id}
    assert {k: getattr(hf, k) for k in names} == {k: tok.id_to_token(v) for k, v in names.items()}
    texts = [
        "<think>ST elevation</think><search>STEMI</search>",
        "dose:  10 mg, Ünïcödé 肺炎",
        "<|im_start|>a<|im_end|>",
    ]
    for text in texts:
        ids = tok.encode(text)
        assert hf(text)["input_ids"] == ids  # add_special_tokens=True adds nothing, as ours
        for skip in (False, True):
            assert hf.decode(ids, skip_special_tokens=skip) == tok.decode(ids, skip_special_tokens=skip)
    for add in (True, False):
        text = tok.apply_chat_template(CHAT, add_generation_prompt=add)
        assert hf.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=add) == text
        assert hf.apply_chat_template(CHAT, add_generation_prompt=add)["input_ids"] == tok.encode(text)


def test_gguf_export_generates_our_greedy_continuation(smol_export) -> None:
    """AutoModelForCausalLM.generate and pipeline("text-generation"), with the export's own
    tokenizer and generation_config, continue the chat-templated prompt with exactly the ids our
    Sampler greedy-decodes (f32)."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    model, tok, out = smol_export
    prompt = tok.encode(tok.apply_chat_template(CHAT))
    sampler = Sampler(model, tok, max_new_tokens=NEW_TOKENS)
    _, decoded = sampler.decode(sampler.start([prompt]), GREEDY)
    ours = decoded.row(0)
    assert len(ours) == NEW_TOKENS

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    inputs = hf_tok.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == prompt
    with torch.no_grad():
        theirs = hf_model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(prompt) :]
    assert theirs.tolist() == ours

    pipe = transformers.pipeline("text-generation", model=hf_model, tokenizer=hf_tok)
    reply = pipe(CHAT, max_new_tokens=NEW_TOKENS, do_sample=False)[0]["generated_text"][-1]
    assert reply == {"role": "assistant", "content": tok.decode(ours, skip_special_tokens=True)}
    # and straight from the directory, as a user would
    text = transformers.pipeline("text-generation", model=out, dtype=torch.float32)(
        tok.apply_chat_template(CHAT), max_new_tokens=NEW_TOKENS, do_sample=False, return_full_text=False
    )[0]["generated_text"]
    assert text == tok.decode(ours, skip_special_tokens=True)
