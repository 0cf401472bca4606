"""The policy to evaluate: a training checkpoint (an Orbax checkpoint directory, one step of it,
a stage workdir, or a training `--workdir`, whose latest stage is taken) or anything
`models.loading.load_model` reads (preset, HF directory, .gguf).

    model, tokenizer, source = load_policy(checkpoint="runs/demo")       # runs/demo/stage3/checkpoints/<last>
    model, tokenizer, source = load_policy(model="smollm2_135m_instruct")
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.models.transformer import Decoder
from medr3_jax.trainer.checkpoints import final_checkpoint, load_params_from_checkpoint

_STAGE = re.compile(r"^stage(\d+)$")


def resolve_checkpoint(path: str) -> str:
    """The checkpoint `path` names: a training workdir (stage1/, stage2/, ... inside) gives its
    highest-numbered stage that holds a checkpoint; anything else is returned as it is."""
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--checkpoint {path}: no such directory")
    names = [n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n))]
    stages = sorted((int(m.group(1)), n) for n in names if (m := _STAGE.match(n)))
    for _, name in reversed(stages):
        found = final_checkpoint(os.path.join(path, name))
        if found is not None:
            return found
    if stages:
        raise FileNotFoundError(f"--checkpoint {path}: its stages {[n for _, n in stages]} hold no checkpoint yet")
    return path


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
    step_dir = resolve_checkpoint(checkpoint)
    decoder, meta = load_params_from_checkpoint(step_dir, shardings_fn=shardings)
    if not meta.get("tokenizer"):
        raise ValueError(f"--checkpoint {step_dir}: its meta names no tokenizer")
    tokenizer = _load_tokenizer(meta["tokenizer"])
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
