"""The bundled SmolLM2-135M-Instruct GGUF: our loader vs transformers' own GGUF loader (which
dequantises and un-permutes independently), logits and greedy answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medr3_jax.generate import main
from medr3_jax.sampling import GREEDY, Sampler
from medr3_jax.sampling.sampler import left_pad

pytestmark = pytest.mark.slow

CHATS = [
    "What is the capital of France?",
    "Which vitamin deficiency causes scurvy?",
    "A 58-year-old man has crushing chest pain radiating to his left arm. What is the most likely diagnosis?",
]


@pytest.fixture(scope="session")
def ours(smollm2):
    return smollm2


@pytest.fixture(scope="session")
def theirs(hf_smollm2, hf_smollm2_tokenizer):
    return hf_smollm2, hf_smollm2_tokenizer


def _chat_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": text}]))


def test_config_from_gguf_metadata(ours):
    model, tokenizer = ours
    c = model.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim) == (30, 576, 9, 3, 64)
    assert c.tie_word_embeddings and c.rope_theta == 100000.0 and c.vocab_size == 49152
    assert tokenizer.id_to_token(tokenizer.eos_id) == "<|im_end|>"


def test_logits_match_transformers_gguf_reference(ours, theirs):
    model, tokenizer = ours
    hf_model, hf_tokenizer = theirs
    rows = [_chat_ids(tokenizer, text) for text in CHATS]
    assert rows[0] == hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": CHATS[0]}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    tokens, mask, positions = left_pad(rows, tokenizer.pad_id, max(map(len, rows)) + 3)
    logits, _ = model(tokens, positions, mask)
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            position_ids=torch.as_tensor(positions, dtype=torch.long),
        ).logits.numpy()
    diff = np.abs(np.asarray(logits) - ref)[mask]
    assert diff.max() <= 1e-3, diff.max()


def test_greedy_answer_matches_transformers_for_20_tokens(ours, theirs):
    model, tokenizer = ours
    hf_model, _ = theirs
    prompt = _chat_ids(tokenizer, CHATS[1])
    sampler = Sampler(model, tokenizer, max_new_tokens=20)
    _, out = sampler.decode(sampler.start([prompt]), GREEDY)
    ids = out.row(0)
    assert len(ids) == 20  # no early stop: the comparison covers all 20 tokens
    with torch.no_grad():
        ref = hf_model.generate(torch.as_tensor([prompt]), max_new_tokens=20, do_sample=False)
    assert ids == ref[0, len(prompt) :].tolist()


def test_generate_cli_prints_a_real_answer(capsys):
    assert (
        main(["--model", "smollm2_135m_instruct", "--chat", "--greedy", "--max_new_tokens", "16", "--prompt", CHATS[0]])
        == 0
    )
    out = capsys.readouterr().out
    assert "Paris" in out
