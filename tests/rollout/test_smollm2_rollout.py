"""A real multi-turn rollout: SmolLM2 searches the bundled sample corpus (MiniLM, exact) and the
log-probs recorded while decoding on the KV cache, across inserted documents, equal a full
re-forward of the final sequences."""

import jax
import numpy as np
import pytest
from flax import nnx

from medr3_jax.data.datasets import load_records
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.protocol import STOP_STRINGS
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.rollout import DOCUMENT, RolloutConfig, RolloutEngine
from medr3_jax.sampling import GREEDY, Sampler


@pytest.mark.slow
def test_kv_continued_logprobs_equal_a_full_forward(smollm2, sample_index_dir, sample_data_dir):
    model, tok = smollm2
    records = load_records("medqa", "test", sample_data_dir)[:2]
    # Prefill the start of a search inside the think block (med_r3, the default protocol), so
    # that this small model searches at least once; the engine reads the prefill back as the
    # rows' assistant prefix. Greedy keeps the test deterministic (log-probs are recorded at
    # T = 1 all the same).
    prefill = "I need to search.<search"
    prompts = [tok.encode(render_prompt(r, PromptStyle(mode="search"), tok) + prefill) for r in records]
    config = RolloutConfig(group_size=1, max_searches=2, top_k=1, max_response_tokens=480, decode_segment=64)
    engine = RolloutEngine(Sampler(model, tok, stop_strings=STOP_STRINGS), Retriever(sample_index_dir), config)
    rollout = engine.run(prompts, params=GREEDY)
    assert rollout.search_counts.max() >= 1, rollout.texts
    assert all(prefix == "<think>" + prefill for prefix in rollout.prefixes)
    assert (rollout.provenance == DOCUMENT).any()

    # The weights go in as arguments (nnx.jit), not as constants baked into the executable.
    logits, _ = nnx.jit(lambda mdl, t, p, m: mdl(t, p, m))(model, rollout.tokens, rollout.positions, rollout.mask)
    logp = jax.nn.log_softmax(np.asarray(logits, np.float32), axis=-1)
    # the log-prob of token t is read from the logits at t-1
    want = np.take_along_axis(np.asarray(logp[:, :-1]), rollout.tokens[:, 1:, None], axis=-1)[..., 0]
    sampled = rollout.loss_mask[:, 1:]
    err = np.abs(want - rollout.logprobs[:, 1:])[sampled]
    print(
        f"rows {rollout.num_rows}, searches {rollout.search_counts.tolist()}, sampled {sampled.sum()}, max err {err.max():.2e}"
    )
    assert err.max() <= 1e-4
