"""MedMCQA: train.json and dev.json of the official release (JSON Lines, 1-based `cop`)."""

from __future__ import annotations

import functools

from medr3_jax.data.builders.base import QABuilder
from medr3_jax.data.releases import find_release_file, read_medmcqa


class Medmcqa(QABuilder):
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unzip the official MedMCQA release (github.com/medmcqa/medmcqa: train.json, dev.json, test.json) "
        "into the manual directory. test.json has no released answers and is not built."
    )
    HOMEPAGE = "https://medmcqa.github.io"

    def _split_readers(self, manual_dir):
        return {
            split: functools.partial(read_medmcqa, find_release_file(manual_dir, f"{split}.json"))
            for split in ("train", "dev")
        }
