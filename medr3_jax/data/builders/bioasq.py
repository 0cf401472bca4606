"""BioASQ Task B yes/no questions from the golden files (MIRAGE's BioASQ-Y/N: 7B to 11B)."""

from __future__ import annotations

import functools

from medr3_jax.data.builders.base import QABuilder
from medr3_jax.data.records import DataError
from medr3_jax.data.releases import find_release_files, read_bioasq


class Bioasq(QABuilder):
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the BioASQ Task B golden files (<N>B<k>_golden.json, e.g. from participants-area.bioasq.org, "
        "laid out as Task11BGoldenEnriched/11B1_golden.json) into the manual directory."
    )
    HOMEPAGE = "http://bioasq.org"

    def _split_readers(self, manual_dir):
        files = find_release_files(manual_dir, r"[0-9]+B[0-9]+_golden\.json")
        if not files:
            raise DataError(f"{manual_dir}: no BioASQ golden files (<N>B<k>_golden.json) in the manual directory")
        return {"test": functools.partial(read_bioasq, files)}
