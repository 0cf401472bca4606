"""The trainer scores tokens under the sampler's distribution softmax(logits / T): rows sampled
by the real Sampler at T = 0.7 score the same in `PolicyTrainer(..., temperature=0.7)` (and not
under the raw logits), `sequence_logprobs` matches a float64 numpy log_softmax(logits / T), and
recomputing the old log-probs at T gives the same update as taking the sampler's."""

import jax
import numpy as np
import pytest
from flax import nnx

from medr3_jax.models.config import preset
from medr3_jax.models.transformer import Decoder
from medr3_jax.sampling import Sampler, SamplingParams
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, TrainBatch, UpdateConfig, sequence_logprobs
from tests.sampling.fakes import byte_tokenizer

T = 0.7
NEW_TOKENS = 16
PROMPTS = ("Question 0: <think>", "Q1:", "Why is the sky blue?")


def _model() -> Decoder:
    """The tiny random policy in f32, same weights on every call (a fresh copy: updates donate)."""
    return Decoder(preset("tiny").replace(param_dtype="float32", compute_dtype="float32"), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def sampled() -> TrainBatch:
    """Rows sampled at T by the real Sampler (no stops: NEW_TOKENS each), right-padded as the
    rollout assembles them: loss mask and old log-probs on sampled tokens only."""
    tok = byte_tokenizer()
    sampler = Sampler(_model(), tok, max_new_tokens=NEW_TOKENS, eos_ids=())
    prompts = [tok.encode(p) for p in PROMPTS]
    _, out = sampler.decode(sampler.start(prompts, seed=0), SamplingParams(temperature=T))
    assert list(out.num_tokens) == [NEW_TOKENS] * len(prompts)
    width = max(map(len, prompts)) + NEW_TOKENS
    tokens = np.full((len(prompts), width), tok.pad_id, np.int32)
    mask, loss_mask = np.zeros((2, len(prompts), width), bool)
    old = np.zeros((len(prompts), width), np.float32)
    for i, p in enumerate(prompts):
        q = len(p) + NEW_TOKENS
        tokens[i, :q] = p + out.row(i)
        mask[i, :q], loss_mask[i, len(p) : q] = True, True
        old[i, len(p) : q] = out.logprobs[i, :NEW_TOKENS]
    positions = np.where(mask, np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    advantages = np.random.default_rng(0).normal(size=len(prompts)).astype(np.float32)
    return TrainBatch(tokens=tokens, positions=positions, mask=mask, loss_mask=loss_mask, old_logprobs=old,
                      advantages=advantages)  # fmt: skip


def test_sampler_logprobs_match_the_trainer_at_the_sampling_temperature(sampled):
    frozen = OptimizerConfig(learning_rate=0.0)
    right = PolicyTrainer(_model(), frozen, UpdateConfig(), temperature=T).update(sampled)
    wrong = PolicyTrainer(_model(), frozen, UpdateConfig(), temperature=1.0).update(sampled)
    print(f"logprob_mismatch at T={T}: trainer T={T} {right['train/logprob_mismatch']:.3g}, "
          f"trainer T=1 {wrong['train/logprob_mismatch']:.3g}")  # fmt: skip
    assert right["train/logprob_mismatch"] < 1e-5
    assert wrong["train/logprob_mismatch"] > 1e-2  # the test sees a trainer that ignores T


def test_sequence_logprobs_is_log_softmax_of_logits_over_t(sampled):
    model = _model()
    logp, entropy = (np.asarray(x) for x in sequence_logprobs(model, sampled, temperature=T))
    logits, _ = model(sampled.tokens, sampled.positions, sampled.mask)
    scaled = np.asarray(logits, np.float64)[:, :-1] / T
    shifted = scaled - scaled.max(-1, keepdims=True)
    ref_all = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))  # float64 log_softmax
    ref = np.take_along_axis(ref_all, sampled.tokens[:, 1:, None], axis=-1)[..., 0]
    ref_entropy = -(np.exp(ref_all) * ref_all).sum(-1)
    np.testing.assert_array_equal(logp[:, 0], 0.0)
    np.testing.assert_allclose(logp[:, 1:], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy[:, 1:], ref_entropy, rtol=1e-5, atol=1e-5)
    raw = np.asarray(sequence_logprobs(model, sampled)[0])  # default T = 1: the raw logits
    assert np.abs(raw[:, 1:] - ref).max() > 1e-2


def test_recomputed_old_logprobs_give_the_same_update_as_the_samplers(sampled):
    opt = OptimizerConfig(learning_rate=1e-3)
    runs = []
    for recompute in (False, True):
        policy = PolicyTrainer(_model(), opt, UpdateConfig(recompute_old_logprobs=recompute), temperature=T)
        metrics = policy.update(sampled)
        runs.append((metrics, jax.tree.leaves(jax.tree.map(np.asarray, policy.params))))
    (taken, taken_params), (recomputed, recomputed_params) = runs
    # the sampler's log-probs agree with the trainer's to f32 rounding; recomputed ones are the trainer's
    assert taken["train/logprob_mismatch"] < 1e-5 and recomputed["train/logprob_mismatch"] < 1e-6
    for key in ("loss/total", "train/grad_norm"):
        np.testing.assert_allclose(recomputed[key], taken[key], rtol=1e-5, atol=1e-7)
    assert taken["train/grad_norm"] > 0 and taken["train/skipped"] == 0
    start = jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(_model())))
    assert max(np.abs(a - b).max() for a, b in zip(taken_params, start)) > 1e-4  # the update moved the weights
    for a, b in zip(recomputed_params, taken_params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_temperature_zero_scores_as_one_and_negative_is_rejected():
    assert PolicyTrainer(_model(), OptimizerConfig(), UpdateConfig(), temperature=0.0).temperature == 1.0
    with pytest.raises(ValueError, match="temperature"):
        PolicyTrainer(_model(), OptimizerConfig(), UpdateConfig(), temperature=-0.5)
