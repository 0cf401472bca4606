"""BERT encoder vs transformers `BertModel` (torch, f32) on the bundled all-MiniLM-L6-v2, and the
pooling variants against numpy pooling of the reference hidden states."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tokenizers
import torch

from medr3_jax import assets
from medr3_jax.models.encoder import ENCODER_STYLES, EncoderConfig, encoder_inputs, load_encoder

TEXTS = [
    "Troponin I is the most specific marker of myocardial injury.",
    "chest pain",
    "Metformin is first-line therapy for type 2 diabetes; it lowers hepatic glucose output. " * 3,
]


@pytest.fixture(scope="module")
def minilm():
    path = assets.minilm_dir()
    tok = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return path, tok


@pytest.fixture(scope="module")
def reference(minilm):
    import transformers  # noqa: PLC0415

    path, tok = minilm
    model = transformers.BertModel.from_pretrained(path, dtype=torch.float32).eval()
    tokens, mask = encoder_inputs(tok, TEXTS, max_len=48)
    with torch.no_grad():
        hidden = model(
            input_ids=torch.as_tensor(tokens, dtype=torch.long), attention_mask=torch.as_tensor(mask, dtype=torch.long)
        ).last_hidden_state.numpy()
    return tokens, mask, hidden


def test_config_reads_sentence_transformers_pooling(minilm):
    config = EncoderConfig.from_hf_dir(minilm[0])
    assert (config.hidden_size, config.num_layers, config.num_heads) == (384, 6, 12)
    assert config.pooling == "mean" and config.normalize


def test_hidden_states_match_transformers(minilm, reference):
    tokens, mask, hidden = reference
    ours = np.asarray(load_encoder(minilm[0])(tokens, mask))
    assert mask[1].sum() < mask[0].sum() < 48 and mask[2].all()  # padded rows and a truncated one
    assert np.abs(ours - hidden)[mask].max() <= 1e-4


@pytest.mark.parametrize("style", sorted(ENCODER_STYLES))
def test_pooling_variants(minilm, reference, style):
    tokens, mask, hidden = reference
    overrides = {k: v for k, v in ENCODER_STYLES[style].items() if k in ("pooling", "normalize")}
    ours = np.asarray(load_encoder(minilm[0], **overrides).embed(tokens, mask))
    if overrides["pooling"] == "cls":
        want = hidden[:, 0]
    else:
        want = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    if overrides["normalize"]:
        want = want / np.linalg.norm(want, axis=-1, keepdims=True)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, want, atol=1e-4)


def test_not_a_bert_directory(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="not a BERT encoder"):
        EncoderConfig.from_hf_dir(str(tmp_path))


def test_bucketed_padding_is_narrower_and_gives_the_same_vectors(minilm):
    path, tok = minilm
    encoder = load_encoder(path)
    short = ["chest pain", "warfarin reversal with vitamin K"]
    full_tokens, full_mask = encoder_inputs(tok, short, max_len=256)
    tokens, mask = encoder_inputs(tok, short, max_len=256, buckets=(16, 32, 64))
    assert tokens.shape == (2, 16) and (tokens == full_tokens[:, :16]).all() and not full_mask[:, 16:].any()
    np.testing.assert_allclose(np.asarray(encoder.embed(tokens, mask)), np.asarray(encoder.embed(full_tokens, full_mask)),
                               atol=1e-5)  # fmt: skip
    # the longest text picks the bucket; nothing longer than max_len, truncation keeps [SEP]
    assert encoder_inputs(tok, ["word " * 40], max_len=256, buckets=(16, 32, 64))[0].shape == (1, 64)
    capped, _ = encoder_inputs(tok, ["word " * 300], max_len=48, buckets=(16, 32, 64))
    assert capped.shape == (1, 48) and capped[0, -1] == full_tokens[0, mask[0].sum() - 1]  # [SEP]
