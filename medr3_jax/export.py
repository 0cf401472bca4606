"""`python -m medr3_jax.export`: a training checkpoint -> a complete HF model directory.

    python -m medr3_jax.export --checkpoint runs/medr3 --out /models/medr3          # latest stage, latest step
    python -m medr3_jax.export --checkpoint runs/medr3/stage3/checkpoints --step 400 --out /models/s3-400

`--checkpoint` is a run workdir (the latest stage, stage0 < stage1 < stage2 < stage3, that has
checkpoints; the log says which), a stage workdir, its `checkpoints/` directory or one step
directory. Writes HF safetensors + config.json (loads with transformers' LlamaForCausalLM /
Qwen2ForCausalLM and with `medr3_jax.models.loading.load_model`), the tokenizer files and
generation_config.json, so `AutoTokenizer`, `AutoModelForCausalLM` and
`pipeline("text-generation")` all load the directory:

- tokenizer: an HF tokenizer directory is copied; a GGUF file's tokenizer, Qwen2 tiktoken ranks
  or the byte tokenizer of random-weight runs are written from our `tokenizers` backend
  (tokenizer.json, tokenizer_config.json with the chat template, special_tokens_map.json);
- generation_config.json: bos, pad, and every stop id of our tokenizer (eos first) as
  `eos_token_id`, over the source's own generation_config.json when it has one.

The tokenizer is the one the checkpoint's meta names, or `--tokenizer` (when the run's tokenizer
lives elsewhere now). Only params are read, never the optimizer state. Prints the output
directory. Exit code 2 when the checkpoint or its tokenizer cannot be read (nothing is written).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from medr3_jax.cli import ArgumentParser, entry_point
from medr3_jax.models.hf import save_hf
from medr3_jax.models.tokenizers import Tokenizer, byte_tokenizer, generation_config, load_tokenizer
from medr3_jax.trainer.checkpoints import load_params_from_checkpoint, resolve_checkpoint
from medr3_jax.trainer.tokenizer_copy import BYTES_TOKENIZER, tokenizer_source

log = logging.getLogger("medr3_jax.export")

# Files of an HF tokenizer copied beside the weights; never config.json. generation_config.json
# is not copied but rewritten with our stop ids (`write_generation_config`).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


class ExportError(ValueError):
    """The export cannot be made as asked (e.g. its tokenizer cannot be read)."""


# ---- tokenizer files ------------------------------------------------------------------------------
def _hf_dir(source: str) -> str | None:
    """The HF tokenizer directory `source` names (the directory or its tokenizer.json), else None."""
    folder = os.path.dirname(source) if os.path.basename(source) == "tokenizer.json" else source
    return folder if folder and os.path.isdir(folder) else None


def open_tokenizer(source: str) -> Tokenizer:
    """Our Tokenizer for a checkpoint's tokenizer source; ExportError naming it when unreadable."""
    if source == BYTES_TOKENIZER:
        return byte_tokenizer()
    if not source:
        raise ExportError("the checkpoint names no tokenizer: pass --tokenizer (an HF dir, .gguf or .tiktoken)")
    try:
        return load_tokenizer(source)
    except (OSError, ValueError) as err:
        raise ExportError(f"tokenizer {source} cannot be read ({err}); pass --tokenizer to name it") from err


def write_tokenizer(
    source: str, tokenizer: Tokenizer, out_dir: str, *, model_max_length: int | None = None
) -> list[str]:
    """Tokenizer files for `out_dir`: an HF directory's own files copied (ours fill any of
    tokenizer.json / tokenizer_config.json / special_tokens_map.json it lacks), any other source
    written from `tokenizer`. Returns the file names."""
    folder = _hf_dir(source)
    if folder is None:
        names = tokenizer.save_hf(out_dir, model_max_length=model_max_length)
        log.info("tokenizer %s written as %s", source, ", ".join(names))
        return names
    copied = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(folder, name))]
    for name in copied:
        shutil.copyfile(os.path.join(folder, name), os.path.join(out_dir, name))
    missing = [n for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json") if n not in copied]
    if missing:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_hf(tmp, model_max_length=model_max_length)
            for name in missing:
                shutil.copyfile(os.path.join(tmp, name), os.path.join(out_dir, name))
        log.info("tokenizer %s copied; %s written from it", folder, ", ".join(missing))
    return sorted({*copied, *missing})


def write_generation_config(source: str, tokenizer: Tokenizer, out_dir: str) -> dict[str, Any]:
    folder = _hf_dir(source)
    base: dict[str, Any] = {}
    if folder is not None and os.path.isfile(os.path.join(folder, "generation_config.json")):
        with open(os.path.join(folder, "generation_config.json"), encoding="utf-8") as fh:
            try:
                base = json.load(fh)
            except json.JSONDecodeError as err:
                raise ExportError(f"{folder}/generation_config.json: not valid JSON ({err})") from err
    config = generation_config(tokenizer, base)
    with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return config


# ---- the export ---------------------------------------------------------------------------------
def export_checkpoint(checkpoint: str, out_dir: str, *, step: int | None = None, tokenizer: str | None = None) -> str:
    """Restores params of `checkpoint` (see `resolve_checkpoint`; latest step or `step`) and
    writes a complete HF directory: weights, config, tokenizer files, generation_config.json."""
    resolved = resolve_checkpoint(checkpoint)
    model, meta = load_params_from_checkpoint(resolved, step=step)
    # the recorded tokenizer, or the run's copy beside the checkpoint where that path is not here
    source = tokenizer if tokenizer is not None else tokenizer_source(str(meta.get("tokenizer") or ""), resolved)
    tok = open_tokenizer(source)  # before anything is written: a bad source leaves no half export
    if tok.vocab_size > model.config.vocab_size:
        raise ExportError(
            f"tokenizer {source} has {tok.vocab_size} ids but the model only {model.config.vocab_size} embedding rows"
        )
    log.info("exporting step %s (stage %s) to %s", meta.get("step"), meta.get("stage"), out_dir)
    save_hf(model, out_dir)
    write_tokenizer(source, tok, out_dir, model_max_length=model.config.max_position_embeddings)
    write_generation_config(source, tok, out_dir)
    return out_dir


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m medr3_jax.export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="run workdir, stage workdir, checkpoint dir or one step dir")
    p.add_argument("--step", type=int, default=None, help="default: the latest step")
    p.add_argument("--out", required=True, help="HF model directory to write")
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer source (HF dir, .gguf, .tiktoken); default: the checkpoint's"
    )
    args = p.parse_args(argv)
    return args


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)
    args = _parse(argv)
    out = export_checkpoint(args.checkpoint, args.out, step=args.step, tokenizer=args.tokenizer)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
