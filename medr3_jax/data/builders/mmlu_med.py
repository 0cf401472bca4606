"""MMLU, the six medical subjects MIRAGE uses; one split per official split (dev, val, test)."""

from __future__ import annotations

import itertools

from medr3_jax.data.builders.base import QABuilder
from medr3_jax.data.releases import MMLU_MED_SUBJECTS, find_release_file, read_mmlu


class MmluMed(QABuilder):
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unpack MMLU's data.tar (people.eecs.berkeley.edu/~hendrycks/data.tar) into the manual directory; "
        "the builder reads data/{dev,val,test}/<subject>_<split>.csv for the six medical subjects."
    )
    HOMEPAGE = "https://github.com/hendrycks/test"

    def _split_readers(self, manual_dir):
        def reader(split: str):
            files = {
                s: find_release_file(manual_dir, f"{s}_{split}.csv", required=split == "test")
                for s in MMLU_MED_SUBJECTS
            }
            return lambda bad: itertools.chain.from_iterable(
                read_mmlu(path, subject, bad) for subject, path in files.items() if path
            )

        splits = ["test"] + [
            s for s in ("dev", "val") if find_release_file(manual_dir, f"anatomy_{s}.csv", required=False)
        ]
        return {split: reader(split) for split in splits}
