"""Test doubles for the sampler: a byte-level tokenizer for the 256-token tiny model, and a
scripted language model that emits a fixed token sequence per row (a deterministic policy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from medr3_jax.models.config import ModelConfig, preset
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.models.tokenizers import byte_tokenizer as make_byte_tokenizer

EOS = 0  # byte 0x00 doubles as end-of-sequence in these tests


def byte_tokenizer() -> Tokenizer:
    """One token per byte (ids 0..255): every multi-character string spans several tokens."""
    return make_byte_tokenizer(EOS)


class ScriptedLM(nnx.Module):
    """Emits script[b, p + 1] after the token at position p of row b (logits one-hot * 30)."""

    def __init__(self, script: np.ndarray, config: ModelConfig | None = None):
        self.config = config or preset("tiny")
        self.script = nnx.Variable(jnp.asarray(script, jnp.int32))

    def __call__(self, tokens, positions, mask, kv_cache=None, *, compute_logits=True, **switches):
        """`switches`: the Decoder's implementation switches (rope_table, layer_weights, ...),
        which change nothing here."""
        script = self.script[...]
        nxt = jnp.take_along_axis(script, jnp.minimum(positions + 1, script.shape[1] - 1), axis=1)
        logits = 30.0 * jax.nn.one_hot(nxt, self.config.vocab_size, dtype=jnp.float32)
        return (logits if compute_logits else None), kv_cache


def script_rows(tok: Tokenizer, rows: list[str], width: int) -> np.ndarray:
    """[B, width] byte ids of each text, padded with 'x' (never a stop)."""
    out = np.full((len(rows), width), ord("x"), np.int32)
    for b, text in enumerate(rows):
        ids = [EOS if ch == "\0" else i for ch, i in zip(text, tok.encode(text.replace("\0", "x")))]
        out[b, : len(ids)] = ids
    return out
