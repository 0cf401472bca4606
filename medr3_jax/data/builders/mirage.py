"""MIRAGE's `benchmark.json`: one split per dataset (medqa, medmcqa, pubmedqa, bioasq, mmlu)."""

from __future__ import annotations

import functools

from medr3_jax.data.builders.base import QABuilder
from medr3_jax.data.releases import MIRAGE_DATASETS, find_release_file, read_mirage


class Mirage(QABuilder):
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Copy benchmark.json from github.com/Teddy-XiongGZ/MIRAGE into the manual directory."
    HOMEPAGE = "https://github.com/Teddy-XiongGZ/MIRAGE"

    def _split_readers(self, manual_dir):
        path = find_release_file(manual_dir, "benchmark.json")
        return {name: functools.partial(read_mirage, path, name) for name in MIRAGE_DATASETS}

    def _evidence_split(self, split):
        return "dev" if split == "medmcqa" else "test"  # MIRAGE holds test sets (MedMCQA: its dev set)
