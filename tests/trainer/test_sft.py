"""The supervised cold start (stage 0): a reference chain becomes the training prompt + the chain
with its <document> blocks out of the loss; the update's loss is the float64 numpy NLL of the
trained tokens; a tiny stage 0 run trains, resumes exactly after a kill, and hands its final
weights to stage 1."""

import dataclasses

import jax
import numpy as np
import pytest

from medr3_jax import assets
from medr3_jax import protocol as P
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord
from medr3_jax.data.references import Reference
from medr3_jax.models.loading import load_model
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.rollout import RolloutConfig
from medr3_jax.trainer import load_params_from_checkpoint, read_scalars
from medr3_jax.trainer.checkpoints import CheckpointConfig
from medr3_jax.trainer.experiment import Experiment
from medr3_jax.trainer.loop import run_stage
from medr3_jax.trainer.sft import chain_example, sft_batch, sft_examples, step_rows
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, UpdateConfig

TOK = byte_tokenizer()
STYLE = PromptStyle(mode="search", chat=False)
RECORD = QARecord(id="q1", dataset="medqa", question="Which organ makes insulin?",
                  options={"A": "Liver", "B": "Pancreas"}, answer="B", answer_text="Pancreas")  # fmt: skip
CHAIN = ("<think>Insulin comes from islets.<search>insulin source</search><document>Beta cells of the pancreas "
         "secrete insulin.</document><document>The liver stores glycogen.</document>So the pancreas."
         "</think><answer>Pancreas</answer>")  # fmt: skip


def test_a_chain_trains_everything_but_its_documents_and_ends_with_eos():
    example = chain_example(RECORD, CHAIN, TOK, STYLE, P.MED_R3, max_searches=4)
    prompt = render_prompt(RECORD, STYLE, TOK, protocol=P.MED_R3, max_searches=4)
    assert prompt.endswith("<think>") and TOK.decode(list(example.prompt)) == prompt
    response = list(example.response)
    assert response[-1] == TOK.eos_id and example.trained[-1]
    assert TOK.decode(response[:-1]) == CHAIN[len("<think>") :]
    trained = "".join(chr(t) for t, on in zip(response[:-1], example.trained) if on)
    masked = "".join(chr(t) for t, on in zip(response[:-1], example.trained) if not on)
    assert masked == ("<document>Beta cells of the pancreas secrete insulin.</document>"
                      "<document>The liver stores glycogen.</document>")  # fmt: skip
    assert trained == ("Insulin comes from islets.<search>insulin source</search>So the pancreas."
                       "</think><answer>Pancreas</answer>")  # fmt: skip


def test_chains_left_out_are_counted_by_reason():
    refs = {("medqa", "q1"): [Reference("medqa", "q1", CHAIN, ()), Reference("medqa", "q1", "no prefix", ())],
            ("medqa", "other"): [Reference("medqa", "other", CHAIN, ())]}  # fmt: skip
    kept, skipped = sft_examples([RECORD], refs, TOK, STYLE, P.MED_R3, max_searches=4, max_length=4096)
    assert len(kept) == 1 and skipped == {"prefix does not fit": 1, "no training question": 1}
    _, skipped = sft_examples([RECORD], refs, TOK, STYLE, P.MED_R3, max_searches=4, max_length=100)
    assert skipped["longer than 100 tokens"] == 1
    _, skipped = sft_examples([RECORD], refs, TOK, dataclasses.replace(STYLE, mode="reason"), P.MED_R3,
                              max_searches=4, max_length=4096)  # fmt: skip
    assert skipped["searches in a no-retrieval prompt"] == 1  # q1's chain; "no prefix" has no search


def test_the_nll_update_is_the_numpy_mean_over_trained_tokens():
    examples = [chain_example(RECORD, CHAIN, TOK, STYLE, P.MED_R3, max_searches=4),
                chain_example(RECORD, CHAIN.replace("So the pancreas.", "Hence."), TOK, STYLE, P.MED_R3,
                              max_searches=4)]  # fmt: skip
    batch = sft_batch(examples, (4096, 512, 2048), TOK.pad_id)
    assert 512 < max(map(len, examples)) <= 2048 and batch.tokens.shape == (2, 2048)  # the smallest that holds it
    assert batch.loss_mask.sum() == sum(sum(e.trained) for e in examples)
    model = load_model("random:tiny")[0]
    logits = np.asarray(model(batch.tokens, batch.positions, batch.mask)[0], np.float64)[:, :-1]
    logsm = logits - logits.max(-1, keepdims=True)
    logsm -= np.log(np.exp(logsm).sum(-1, keepdims=True))
    picked = np.take_along_axis(logsm, batch.tokens[:, 1:, None], -1)[..., 0]
    want = -picked[batch.loss_mask[:, 1:]].mean()
    policy = PolicyTrainer(model, OptimizerConfig(learning_rate=1e-3), UpdateConfig(micro_batch=1), objective="nll")
    metrics = policy.update(batch)
    np.testing.assert_allclose(metrics["loss/nll"], want, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss/total"], want, rtol=1e-5)


def test_step_rows_cover_each_epoch_once_and_depend_on_the_step_only():
    seen = np.concatenate([step_rows(10, 4, step, seed=3)[0] for step in range(5)])  # 2 epochs = 20 rows
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert step_rows(10, 4, 2, seed=3)[1] == 0 and step_rows(10, 4, 3, seed=3)[1] == 1  # rows 8..11 start in epoch 0
    np.testing.assert_array_equal(step_rows(10, 4, 3, seed=3)[0], seen[12:16])


def _stage0(sample_data_dir, **kw):
    args = dict(stage="stage0", objective="sft", model="random:tiny", data_dir=sample_data_dir,
                references=assets.sample_references(),
                train_data=("medqa:train", "medmcqa:train", "pubmedqa:train"), num_steps=3, prompts_per_step=2,
                prompt_buckets=(1664,),  # prompt + chain in bytes: 9 of the 21 bundled chains fit (1394-1649)
                prompt=PromptStyle(mode="search", chat=False),
                rollout=RolloutConfig(group_size=2, max_response_tokens=48, decode_segment=16),
                update=UpdateConfig(micro_batch=2), optimizer=OptimizerConfig(learning_rate=3e-3),
                checkpoint=CheckpointConfig(every_steps=1, keep=5, async_save=False))  # fmt: skip
    return Experiment(**(args | kw))


@pytest.fixture(scope="module")
def straight_stage0(sample_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sft") / "straight"
    run_stage(_stage0(sample_data_dir), str(workdir))
    return workdir


def test_stage0_lowers_the_nll_and_resumes_exactly(sample_data_dir, straight_stage0, tmp_path):
    nll = [v for _, v in read_scalars(str(straight_stage0 / "stage0" / "tb"))["loss/nll"]]
    # a random byte model starts at ln 256 = 5.545 nats per token; lr 3e-3 lowers it at every step
    # (measured: 5.52, 5.36, 5.06)
    assert len(nll) == 3 and abs(nll[0] - np.log(256)) < 0.1 and nll[0] > nll[1] > nll[2] and nll[2] < nll[0] - 0.3
    interrupted = tmp_path / "interrupted"
    run_stage(_stage0(sample_data_dir, num_steps=2), str(interrupted))  # "killed" after 2 steps
    run_stage(_stage0(sample_data_dir), str(interrupted))
    a, meta_a = load_params_from_checkpoint(str(straight_stage0 / "stage0" / "checkpoints"))
    b, meta_b = load_params_from_checkpoint(str(interrupted / "stage0" / "checkpoints"))
    assert meta_a["step"] == meta_b["step"] == 3 and meta_a["data_position"] == meta_b["data_position"] == 6
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_stage1_starts_from_the_cold_start(sample_data_dir, byte_index, straight_stage0):
    from medr3_jax.rewards import RewardWeights  # noqa: PLC0415

    frozen = OptimizerConfig(learning_rate=0.0)  # the stage's checkpoint = the weights it started from
    stage1 = Experiment(stage="stage1", model="random:tiny", data_dir=sample_data_dir, index_dir=byte_index,
                        train_data=("medqa:train",), num_steps=1, prompts_per_step=2, prompt_buckets=(2048, 4096),
                        prompt=PromptStyle(mode="reason", chat=False), rewards=RewardWeights.stage1(),
                        rollout=RolloutConfig(group_size=2, retrieval=False, max_response_tokens=16,
                                              decode_segment=16),
                        optimizer=frozen, checkpoint=CheckpointConfig(every_steps=1, async_save=False))  # fmt: skip
    run_stage(stage1, str(straight_stage0))
    a, _ = load_params_from_checkpoint(str(straight_stage0 / "stage0" / "checkpoints"))
    b, meta = load_params_from_checkpoint(str(straight_stage0 / "stage1" / "checkpoints"))
    assert meta["stage"] == "stage1"
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
