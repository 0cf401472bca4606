"""Sampler: stops (scripted policy), cached decode + append vs a full forward, compile counts,
sharded runs, and SmolLM2 greedy output vs transformers' generate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medr3_jax.models import Decoder, preset
from medr3_jax.sampling.methods import GREEDY
from medr3_jax.sampling.sampler import Sampler, StopReason, chunk_widths
from medr3_jax.sharding import make_mesh
from tests.sampling.fakes import EOS, ScriptedLM, byte_tokenizer, script_rows


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def tiny_model():
    return Decoder(preset("tiny"), rngs=nnx.Rngs(0))


def test_rows_stop_on_split_stop_string_eos_and_budget_then_resume_after_append(tok):
    doc = "<document>D</document>"
    prompts = ["ab", "abc", "a"]
    texts = [
        prompts[0] + "think</search>" + doc + "answer\0",
        prompts[1] + "hi\0",
        prompts[2] + "long text without any stop at all",
    ]
    model = ScriptedLM(script_rows(tok, texts, 80))
    sampler = Sampler(model, tok, stop_strings=("</search>", "<document>", "</document>"), max_new_tokens=40)
    state = sampler.start([tok.encode(p) for p in prompts], max_new_tokens=[40, 40, 20])  # per-row budgets
    state, out = sampler.decode(state, GREEDY)

    assert list(out.reason) == [StopReason.STOP_STRING, StopReason.EOS, StopReason.LENGTH]
    assert tok.decode(out.row(0)) == "think</search>"  # stopped right after the '>' token
    assert out.stop_string[0] == "</search>" and out.stop_string[1] is None
    assert out.row(1) == tok.encode("hi") + [EOS]
    assert tok.decode(out.row(2)) == "long text without an"  # 20-token budget

    state = sampler.append(state, rows=[0], tokens=[tok.encode(doc)])
    state, out = sampler.decode(state, GREEDY)
    assert list(out.num_tokens) == [7, 0, 0]  # only the resumed row runs
    assert out.row(0) == tok.encode("answer") + [EOS] and out.reason[0] == StopReason.EOS
    assert list(out.reason[1:]) == [StopReason.EOS, StopReason.LENGTH]


def _full_forward_logp(model, rows: list[list[int]]):
    """log-softmax of a full (uncached) forward over each right-padded row."""
    width = max(map(len, rows))
    tokens = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), bool)
    for b, r in enumerate(rows):
        tokens[b, : len(r)], mask[b, : len(r)] = r, True
    positions = np.broadcast_to(np.arange(width), tokens.shape).astype(np.int32)
    logits, _ = model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    return np.asarray(jax.nn.log_softmax(logits, axis=-1)), np.asarray(logits)


def with_switches(model: Decoder, cache_attention: str, decode_weights: str = "stacked") -> Decoder:
    """`model`'s weights under other implementation switches."""
    config = model.config.replace(cache_attention=cache_attention, decode_weights=decode_weights)
    other = Decoder(config, rngs=nnx.Rngs(0))
    nnx.update(other, nnx.state(model, nnx.Param))
    return other


@pytest.mark.parametrize(
    "cache_attention, decode_weights",
    [("blockwise", "stacked"), ("dense", "stacked"), ("blockwise", "per_layer"), ("dense", "per_layer")],
)
def test_cached_decode_with_50_token_append_equals_full_forward(tiny_model, tok, cache_attention, decode_weights):
    """Dense attention runs in a 128-slot window of the 512-slot cache here; per-layer decode
    weights run the layers unrolled on weights sliced once per decode call."""
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 256, n).tolist() for n in (9, 23, 4)]
    doc = rng.integers(1, 256, 50).tolist()
    tiny_model = with_switches(tiny_model, cache_attention, decode_weights)
    sampler = Sampler(tiny_model, tok, max_new_tokens=24, append_chunk=16)
    state = sampler.start(prompts, cache_len=512)
    state, first = sampler.decode(state, GREEDY, steps=10)
    state = sampler.append(state, rows=[0, 2], tokens=[doc, doc])
    state, second = sampler.decode(state, GREEDY, steps=10)

    rows, sampled = [], []
    for b, p in enumerate(prompts):
        inserted = doc if b in (0, 2) else []
        gen1, gen2 = first.row(b), second.row(b)
        assert len(gen1) == len(gen2) == 10
        rows.append(p + gen1 + inserted + gen2)
        starts = [len(p) + i for i in range(10)] + [len(p) + 10 + len(inserted) + i for i in range(10)]
        sampled.append((starts, first.logprobs[b, :10].tolist() + second.logprobs[b, :10].tolist()))
    logp, logits = _full_forward_logp(tiny_model, rows)
    for b, (starts, ours) in enumerate(sampled):
        for pos, lp in zip(starts, ours):
            token = rows[b][pos]
            assert token == logp[b, pos - 1].argmax()  # greedy under the full forward too
            assert abs(lp - logp[b, pos - 1, token]) <= 1e-5

    # The live cache itself: feed each row's newest token, compare all logits with the full pass.
    cache_logits, _ = tiny_model(
        state.last_token[:, None], state.position[:, None], jnp.ones((3, 1), bool), state.cache
    )
    for b, r in enumerate(rows):
        assert np.abs(np.asarray(cache_logits)[b, 0] - logits[b, len(r) - 1]).max() <= 1e-5


def test_dense_windows_grow_with_the_conversation_and_match_blockwise(tiny_model, tok):
    """Windows of 256 then 512 slots (of 640): same tokens and log-probs as blockwise attention,
    one compiled decode per window."""
    rng = np.random.default_rng(3)
    prompts = [rng.integers(1, 256, n).tolist() for n in (100, 61)]
    doc = rng.integers(1, 256, 150).tolist()
    outs = {}
    for impl in ("blockwise", "dense"):
        sampler = Sampler(with_switches(tiny_model, impl), tok, max_new_tokens=80, append_chunk=64)
        state = sampler.start(prompts, cache_len=640)  # prompt bucket 128: decode window 256
        state, first = sampler.decode(state, GREEDY, steps=40)
        state = sampler.append(state, rows=[1], tokens=[doc])  # row 1 at 317 slots: window 512 (317 + 40)
        state, second = sampler.decode(state, GREEDY, steps=40)
        outs[impl] = (first, second, dict(sampler.trace_counts))
    for a, b in zip(outs["blockwise"][:2], outs["dense"][:2]):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    assert list(outs["dense"][1].num_tokens) == [40, 40]
    # fills: the prompt and the 150-token append's chunks of 64 and 32 (64 + 64 + 32)
    assert outs["blockwise"][2] == {"fill": 3, "decode": 1}
    assert outs["dense"][2] == {"fill": 3, "decode": 2}  # decode windows 256 and 512


def test_ten_calls_in_one_bucket_compile_once(tiny_model, tok):
    sampler = Sampler(tiny_model, tok, max_new_tokens=8, append_chunk=16)
    rng = np.random.default_rng(1)
    for call in range(10):
        prompts = [rng.integers(1, 256, rng.integers(33, 49)).tolist() for _ in range(4)]  # bucket 48
        state = sampler.start(prompts, seed=call)
        state, _ = sampler.decode(state, GREEDY)
    assert dict(sampler.trace_counts) == {"fill": 1, "decode": 1}
    for _ in range(2):
        state = sampler.append(state, rows=[1, 3], tokens=[[5] * 20, [6] * 3])
    assert dict(sampler.trace_counts) == {"fill": 3, "decode": 1}  # 20 tokens: chunks of 16 and 4


def test_append_chunks_are_full_but_the_last_which_shrinks_to_a_half_or_a_quarter():
    assert chunk_widths(640, 256) == [256, 256, 128]
    assert chunk_widths(257, 256) == [256, 64]
    assert chunk_widths(65, 256) == [128]
    assert chunk_widths(1, 256) == [64]  # never below a quarter: at most 3 compiled shapes
    assert chunk_widths(129, 256) == [256]
    assert chunk_widths(640, 320) == [320, 320]
    assert chunk_widths(5, 3) == [3, 3]  # an odd chunk does not halve
    assert chunk_widths(0, 256) == []


def test_append_beyond_the_cache_names_the_row(tiny_model, tok):
    sampler = Sampler(tiny_model, tok, max_new_tokens=4, append_chunk=16)
    state = sampler.start([[1, 2, 3]], cache_len=128)
    with pytest.raises(ValueError, match=r"row 0 needs .* cache_len"):
        sampler.append(state, rows=[0], tokens=[[7] * 300])  # 128 slots: the prompt bucket (32) + 4


def test_sharded_sampler_matches_one_device(tiny_model, tok):
    rng = np.random.default_rng(2)
    prompts = [rng.integers(1, 256, n).tolist() for n in (5, 17, 9, 30)]
    outs = []
    for mesh in (None, make_mesh("data=2,fsdp=2,tensor=2")):
        sampler = Sampler(tiny_model, tok, max_new_tokens=12, append_chunk=16, mesh=mesh)
        state = sampler.start(prompts)
        state, out = sampler.decode(state, GREEDY, steps=6)
        state = sampler.append(state, rows=[1], tokens=[[9] * 20])
        state, out2 = sampler.decode(state, GREEDY, steps=6)
        outs.append((out.tokens, out2.tokens, out.logprobs))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    np.testing.assert_allclose(outs[0][2], outs[1][2], atol=1e-5)


@pytest.mark.slow
def test_smollm2_greedy_equals_transformers_generate(smollm2, hf_smollm2):
    import torch  # noqa: PLC0415

    model, tok = smollm2
    questions = [
        "Hi",
        "Which vitamin deficiency causes scurvy?",
        "A 58-year-old man has crushing chest pain radiating to his left arm for an hour. What is the diagnosis?",
        "List two first-line drugs for type 2 diabetes.",
    ]
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}])) for q in questions]
    assert len({len(p) for p in prompts}) == 4
    model = with_switches(model, "blockwise", "per_layer")  # the CPU defaults (backend_overrides)
    sampler = Sampler(model, tok, max_new_tokens=32)
    _, out = sampler.decode(sampler.start(prompts), GREEDY)

    width = max(map(len, prompts))
    ids = torch.full((4, width), tok.pad_id, dtype=torch.long)
    attn = torch.zeros((4, width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :], attn[b, width - len(p) :] = torch.tensor(p), 1
    with torch.no_grad():
        ref = hf_smollm2.generate(
            input_ids=ids,
            attention_mask=attn,
            max_new_tokens=32,
            do_sample=False,
            eos_token_id=list(tok.stop_ids),
            pad_token_id=tok.pad_id,
        )[:, width:]
    for b in range(4):
        ours = out.row(b)
        assert ours == ref[b, : len(ours)].tolist(), b
        assert len(ours) == 32 or out.reason[b] == StopReason.EOS


def test_full_cache_and_spent_budget_stop_without_sampling(tok):
    """A row stops with CACHE_FULL when its slots run out; a row resumed by `append` with no
    budget left stops with LENGTH before sampling anything."""
    model = ScriptedLM(np.full((2, 400), ord("y"), np.int32))
    sampler = Sampler(model, tok, max_new_tokens=300)
    state = sampler.start([[1, 2, 3], [4, 5]], max_new_tokens=[300, 5], cache_len=128)
    state, out = sampler.decode(state, GREEDY)
    # Prompt bucket 32: 31 slots after prefill; each sampled token needs the slot of its
    # predecessor, so 128 - 31 = 97 tokens fit.
    assert list(out.reason) == [StopReason.CACHE_FULL, StopReason.LENGTH]
    assert list(out.num_tokens) == [97, 5]
    state = sampler.append(state, rows=[1], tokens=[[7, 8]])
    state, out = sampler.decode(state, GREEDY)
    assert list(out.num_tokens) == [0, 0] and out.reason[1] == StopReason.LENGTH
