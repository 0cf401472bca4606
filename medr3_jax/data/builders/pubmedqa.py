"""PubMedQA (PQA-L): `ori_pqal.json` + `test_ground_truth.json`; test = the 500 ground-truth PMIDs."""

from __future__ import annotations

import functools

from medr3_jax.data.builders.base import QABuilder
from medr3_jax.data.releases import find_release_file, read_pubmedqa


class Pubmedqa(QABuilder):
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Copy the `data` folder of github.com/pubmedqa/pubmedqa (ori_pqal.json, test_ground_truth.json) "
        "into the manual directory."
    )
    HOMEPAGE = "https://pubmedqa.github.io"

    def _split_readers(self, manual_dir):
        ori = find_release_file(manual_dir, "ori_pqal.json")
        truth = find_release_file(manual_dir, "test_ground_truth.json")
        return {split: functools.partial(read_pubmedqa, ori, truth, split) for split in ("train", "test")}
