"""`python -m medr3_jax.export`: a training checkpoint -> an HF model directory.

    python -m medr3_jax.export --checkpoint /work/stage3/checkpoints --out /models/medr3-stage3
    python -m medr3_jax.export --checkpoint /work/stage3/checkpoints --step 400 --out /models/s3-400

Writes HF safetensors + config.json (loads with transformers' LlamaForCausalLM /
Qwen2ForCausalLM and with `medr3_jax.models.loading.load_model`) and, when the run's tokenizer
was an HF directory, its tokenizer files. Only params are read, never the optimizer state.
Prints the output directory. Exit code 2 when the checkpoint cannot be read.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from typing import Sequence

from medr3_jax.models.hf import CheckpointError, save_hf
from medr3_jax.trainer.checkpoints import load_params_from_checkpoint

log = logging.getLogger("medr3_jax.export")

# Files of an HF tokenizer (and generation defaults) copied beside the weights; never config.json.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


def copy_tokenizer(tokenizer: str, out_dir: str) -> list[str]:
    """Copies an HF tokenizer's files into `out_dir`; returns the names copied.

    A `.gguf` tokenizer (vocabulary in the GGUF metadata) or any other source is not copied:
    the log says where it lives.
    """
    source = tokenizer
    if os.path.basename(source) == "tokenizer.json":
        source = os.path.dirname(source)
    if source and os.path.isdir(source):
        copied = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(source, name))]
        for name in copied:
            shutil.copyfile(os.path.join(source, name), os.path.join(out_dir, name))
        if "tokenizer.json" not in copied:
            log.warning("%s: no tokenizer.json there; the export has no usable tokenizer", source)
        return copied
    if tokenizer.endswith(".gguf"):
        log.info("tokenizer lives in the GGUF %s (vocabulary in its metadata); not copied", tokenizer)
    elif tokenizer:
        log.warning("tokenizer %s is not an HF directory; not copied", tokenizer)
    else:
        log.warning("the checkpoint names no tokenizer; none copied")
    return []


def export_checkpoint(checkpoint: str, out_dir: str, *, step: int | None = None) -> str:
    """Restores params of `checkpoint` (latest step or `step`) and writes an HF directory."""
    model, meta = load_params_from_checkpoint(checkpoint, step=step)
    log.info("exporting step %s (stage %s) to %s", meta.get("step"), meta.get("stage"), out_dir)
    save_hf(model, out_dir)
    copy_tokenizer(str(meta.get("tokenizer") or ""), out_dir)
    return out_dir


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m medr3_jax.export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint dir, one step dir, or a stage workdir")
    p.add_argument("--step", type=int, default=None, help="default: the latest step")
    p.add_argument("--out", required=True, help="HF model directory to write")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)
    args = _parse(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out, step=args.step)
    except CheckpointError as err:
        print(f"export: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
