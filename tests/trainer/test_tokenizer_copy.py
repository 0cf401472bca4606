"""The tokenizer copy a stage keeps beside its checkpoints (`trainer.tokenizer_copy`): it loads
back as the same tokenizer (ids, special and stop ids, chat rendering) for a GGUF and a tiktoken
source; a checkpoint whose recorded tokenizer is not on this machine, local or on an object store
(the fake `fakegcs://`), is given the copy, fetched into a local cache; the byte tokenizer has none."""

from __future__ import annotations

import pytest

from medr3_jax import fileio
from medr3_jax.models.tokenizers import Tokenizer, byte_tokenizer, load_tokenizer
from medr3_jax.trainer.tokenizer_copy import save_tokenizer_copy, stage_dir_of, tokenizer_source
from tests.fake_gcs import registered

TEXTS = ["<think>ST elevation</think><search>STEMI</search>", "dose:  10 mg, Ünïcödé 肺炎", "<|im_start|>a<|im_end|>"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which vitamin prevents scurvy?"}]


def _same(copy: Tokenizer, original: Tokenizer) -> None:
    assert copy.vocab_size == original.vocab_size
    assert (copy.eos_id, copy.pad_id, copy.bos_id, copy.unk_id, copy.stop_ids) == (
        original.eos_id, original.pad_id, original.bos_id, original.unk_id, original.stop_ids)  # fmt: skip
    for text in TEXTS:
        assert copy.encode(text) == original.encode(text)
    for add in (True, False):
        assert copy.apply_chat_template(CHAT, add_generation_prompt=add) == original.apply_chat_template(
            CHAT, add_generation_prompt=add
        )


@pytest.mark.parametrize("source", ["gguf", "tiktoken"])
def test_the_copy_loads_back_as_the_same_tokenizer(source, tmp_path, smollm2_tokenizer, qwen_ranks_path):
    original = smollm2_tokenizer if source == "gguf" else load_tokenizer(qwen_ranks_path)
    stage = str(tmp_path / "run" / "stage1")
    copy = save_tokenizer_copy(original, stage)
    assert copy == fileio.join(stage, "tokenizer")
    _same(load_tokenizer(copy), original)
    assert len(original.stop_ids) > 1  # end of text and end of turn: both come back
    # a second start finds the complete copy and leaves it as it is
    before = (tmp_path / "run" / "stage1" / "tokenizer" / "tokenizer.json").stat().st_mtime_ns
    assert save_tokenizer_copy(original, stage) == copy
    assert (tmp_path / "run" / "stage1" / "tokenizer" / "tokenizer.json").stat().st_mtime_ns == before


def test_a_checkpoint_from_elsewhere_gets_the_runs_copy(tmp_path, smollm2_tokenizer, smollm2_gguf):
    stage = str(tmp_path / "run" / "stage3")
    fileio.makedirs(fileio.join(stage, "checkpoints", "4", "state"))
    step_dir, missing = fileio.join(stage, "checkpoints", "4"), "/elsewhere/model.gguf"
    assert [stage_dir_of(p) for p in (stage, fileio.join(stage, "checkpoints"), step_dir)] == [stage] * 3
    assert tokenizer_source(missing, step_dir) == missing  # no copy yet: the loader will name the path
    save_tokenizer_copy(smollm2_tokenizer, stage)
    assert tokenizer_source(smollm2_gguf, step_dir) == smollm2_gguf  # the recorded path, where it exists
    assert tokenizer_source(missing, step_dir) == fileio.join(stage, "tokenizer")
    assert save_tokenizer_copy(byte_tokenizer(), str(tmp_path / "tiny")) is None
    assert tokenizer_source("<bytes>", step_dir) == "<bytes>"


def test_a_remote_runs_copy_is_fetched_into_the_cache(tmp_path, smollm2_tokenizer):
    with registered():
        stage = "fakegcs://bucket/run/stage1"
        fileio.makedirs(fileio.join(stage, "checkpoints", "2", "state"))
        fileio.write_text(fileio.join(stage, "checkpoints", "2", "state", "x"), "x")
        save_tokenizer_copy(smollm2_tokenizer, stage)
        local = tokenizer_source("/elsewhere/model.gguf", fileio.join(stage, "checkpoints", "2"),
                                 cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert local.startswith(str(tmp_path / "cache"))
    _same(load_tokenizer(local), smollm2_tokenizer)


def test_each_stage_keeps_a_copy_from_its_start(tmp_path, smollm2_tokenizer):
    """`stage_model` (what the RL and supervised stages build first) writes the copy on process 0."""
    from medr3_jax.trainer.experiment import Experiment  # noqa: PLC0415
    from medr3_jax.trainer.inputs import stage_model  # noqa: PLC0415

    built = stage_model(Experiment(stage="stage1", model="smollm2_135m_instruct", mesh="data=-1"), str(tmp_path))
    built.checkpointer.close()
    _same(load_tokenizer(str(tmp_path / "stage1" / "tokenizer")), smollm2_tokenizer)
