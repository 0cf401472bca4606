"""The policy to evaluate: a training checkpoint (an Orbax checkpoint directory, one step of it,
a stage workdir, or a training `--workdir`, whose latest stage is taken) or anything
`models.loading.load_model` reads (preset, HF directory, .gguf).

    model, tokenizer, source = load_policy(checkpoint="runs/demo")       # runs/demo/stage3/checkpoints/<last>
    model, tokenizer, source = load_policy(model="smollm2_135m_instruct")
"""

from __future__ import annotations

import os
from typing import Any, Callable

from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.models.transformer import Decoder
from medr3_jax.trainer.checkpoints import load_params_from_checkpoint, resolve_checkpoint, step_directory
from medr3_jax.trainer.tokenizer_copy import tokenizer_source


def load_policy(
    *, model: str | None = None, checkpoint: str | None = None, shardings: Callable[[Any], dict] | None = None,
    **overrides: Any,
) -> tuple[Decoder, Tokenizer, dict[str, Any]]:  # fmt: skip
    """(model, tokenizer, source): `source` says what was loaded (name, and for a checkpoint its
    path, stage and step), for the results table."""
    if (model is None) == (checkpoint is None):
        raise ValueError("give exactly one of --model and --checkpoint")
    if model is not None:
        from medr3_jax.models.loading import load_model  # noqa: PLC0415

        decoder, tokenizer = load_model(model, shardings=shardings, **overrides)
        return decoder, tokenizer, {"name": os.path.basename(model.rstrip("/")), "model": model}
    resolved = resolve_checkpoint(checkpoint)
    decoder, meta = load_params_from_checkpoint(resolved, shardings_fn=shardings)
    step_dir = step_directory(resolved, int(meta["step"]))
    if not meta.get("tokenizer"):
        raise ValueError(f"--checkpoint {step_dir}: its meta names no tokenizer")
    tokenizer = _load_tokenizer(tokenizer_source(meta["tokenizer"], resolved))
    name = f"{meta.get('stage', 'checkpoint')} step {meta.get('step')}"
    source = {"name": name, "checkpoint": step_dir, "stage": meta.get("stage"), "step": meta.get("step")}
    return decoder, tokenizer, source


def _load_tokenizer(recorded: str) -> Tokenizer:
    """The tokenizer the checkpoint's meta records (a path; "<bytes>" for the byte tokenizer of
    random-weight presets)."""
    from medr3_jax.models.tokenizers import byte_tokenizer, load_tokenizer  # noqa: PLC0415

    if recorded == "<bytes>":
        return byte_tokenizer()
    if not os.path.exists(recorded):
        raise FileNotFoundError(f"the checkpoint's tokenizer {recorded}: no such file (was it trained elsewhere?)")
    return load_tokenizer(recorded)
