"""RareArena: case report -> rare-disease diagnosis; splits `rds` (screening) and `rdc` (with test results)."""

from __future__ import annotations

import functools

from medr3_jax.data.builders.base import QABuilder
from medr3_jax.data.records import DataError
from medr3_jax.data.releases import find_release_file, read_rarearena


class Rarearena(QABuilder):
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Copy benchmark_data/RDS.json and/or RDC.json of github.com/zhao-zy15/RareArena into the manual directory."
    )
    HOMEPAGE = "https://github.com/zhao-zy15/RareArena"

    def _split_readers(self, manual_dir):
        readers = {}
        for split, name, with_tests in (("rds", "RDS.json", False), ("rdc", "RDC.json", True)):
            path = find_release_file(manual_dir, name, required=False)
            if path:
                readers[split] = functools.partial(read_rarearena, path, with_tests)
        if not readers:
            raise DataError(f"{manual_dir}: neither RDS.json nor RDC.json in the manual directory")
        return readers
