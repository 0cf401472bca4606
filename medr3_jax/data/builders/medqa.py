"""MedQA (USMLE, US): the 4-option files MIRAGE uses (default) or the original 5-option ones."""

from __future__ import annotations

import functools

import tensorflow_datasets as tfds

from medr3_jax.data.builders.base import QABuilder
from medr3_jax.data.releases import find_release_file, read_medqa


class Medqa(QABuilder):
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unpack MedQA's data_clean.zip (github.com/jind11/MedQA) into the manual directory; the builder "
        "finds questions/US/{train,dev,test}.jsonl and questions/US/4_options/phrases_no_exclude_*.jsonl."
    )
    HOMEPAGE = "https://github.com/jind11/MedQA"
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="us_4_options", description="US, 4 options A-D (MIRAGE's MedQA)"),
        tfds.core.BuilderConfig(name="us_5_options", description="US, the original 5 options A-E"),
    ]

    def _split_readers(self, manual_dir):
        def name(split: str) -> str:
            if self.builder_config.name == "us_4_options":
                return f"US/4_options/phrases_no_exclude_{split}.jsonl"
            return f"US/{split}.jsonl"

        return {
            split: functools.partial(read_medqa, find_release_file(manual_dir, name(split)))
            for split in ("train", "dev", "test")
        }
