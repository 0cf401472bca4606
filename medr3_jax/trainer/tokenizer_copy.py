"""A copy of the policy's tokenizer beside a stage's checkpoints (`<stage>/tokenizer/`: an HF
tokenizer directory with its generation_config.json), so that export and evaluate load a
checkpoint on another machine, or from a gs:// run, where the path its meta records (a local
file, or the cache copy of a remote model) does not exist.

    save_tokenizer_copy(tokenizer, stage_dir)                      # process 0, at the stage's start
    source = tokenizer_source(meta["tokenizer"], checkpoint_path)  # the recorded path, else the copy
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

from medr3_jax import fileio
from medr3_jax.models.tokenizers import Tokenizer, generation_config
from medr3_jax.trainer.checkpoints import checkpoint_root

log = logging.getLogger(__name__)

TOKENIZER_SUBDIR = "tokenizer"
BYTES_TOKENIZER = "<bytes>"  # Tokenizer.path of `byte_tokenizer()` (random-weight runs): nothing to copy
_MARK = "tokenizer.json"  # written last: its presence marks a complete copy


def save_tokenizer_copy(tokenizer: Tokenizer, stage_dir: str) -> str | None:
    """Writes `<stage_dir>/tokenizer/` (local or remote, through `fileio`) unless a complete copy
    is there; returns its path (None for the byte tokenizer, which every install has)."""
    if tokenizer.path == BYTES_TOKENIZER:
        return None
    dest = fileio.join(stage_dir, TOKENIZER_SUBDIR)
    if fileio.isfile(fileio.join(dest, _MARK)):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        names = tokenizer.save_hf(tmp)
        with open(os.path.join(tmp, "generation_config.json"), "w", encoding="utf-8") as fh:
            json.dump(generation_config(tokenizer), fh, indent=2)
        fileio.makedirs(dest)
        for name in sorted([*names, "generation_config.json"], key=lambda n: n == _MARK):
            with open(os.path.join(tmp, name), encoding="utf-8") as fh:
                fileio.atomic_write_text(fileio.join(dest, name), fh.read())
    log.info("tokenizer %s copied to %s (export and evaluate use it where that path does not exist)",
             tokenizer.path, dest)  # fmt: skip
    return dest


def stage_dir_of(checkpoint: str) -> str:
    """The stage workdir of anything `load_params_from_checkpoint` accepts (the stage workdir, its
    checkpoints/ directory or one step directory): the folder holding its checkpoint directory."""
    return os.path.dirname(checkpoint_root(checkpoint).rstrip("/"))


def tokenizer_source(recorded: str, checkpoint: str, *, cache_dir: str | None = None) -> str:
    """What to load a checkpoint's tokenizer from: the path its meta records when it exists here
    (or the byte tokenizer's name), else the run's copy beside the checkpoint (fetched into the
    local cache, `remote.stage`, when the run is remote), else the recorded path (whose loader
    then names it as missing)."""
    if recorded == BYTES_TOKENIZER or (recorded and os.path.exists(recorded)):
        return recorded
    copy = fileio.join(stage_dir_of(checkpoint), TOKENIZER_SUBDIR)
    if not fileio.isfile(fileio.join(copy, _MARK)):
        return recorded
    log.info("the checkpoint's tokenizer %s is not on this machine; using the run's copy %s", recorded or "-", copy)
    if not fileio.is_remote(copy):
        return copy
    from medr3_jax.remote import stage  # noqa: PLC0415

    return stage(copy, knob="--checkpoint", cache_dir=cache_dir)
