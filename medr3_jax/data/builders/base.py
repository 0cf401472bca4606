"""The shared TFDS builder: one feature set (`QARecord.to_example`), array_record files, read
with `tfds.data_source` (no TensorFlow), raw files found inside the manual directory.

A subclass names its splits and how to read each one from the manual directory; the base adds
the optional evidence map and records malformed/filtered counts in the dataset metadata.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import tensorflow_datasets as tfds

from medr3_jax.data.records import BadRecords, QARecord
from medr3_jax.data.releases import EvidenceMap, read_evidence_map

log = logging.getLogger(__name__)

SplitReader = Callable[[BadRecords], Iterator[QARecord]]

_TEXT = tfds.features.Text()
FEATURES = tfds.features.FeaturesDict(
    {
        "id": _TEXT,
        "dataset": _TEXT,
        "question": _TEXT,
        "option_letters": tfds.features.Sequence(_TEXT),
        "option_texts": tfds.features.Sequence(_TEXT),
        "answer": _TEXT,
        "answer_text": _TEXT,
        "open_question": _TEXT,
        "context": _TEXT,
        "evidence_ids": tfds.features.Sequence(_TEXT),
    }
)


class QABuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the benchmark builders. `skip_bad_records=True` skips (and counts) malformed
    records instead of raising on the first one."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: the common QARecord features."}
    HOMEPAGE = ""
    CITATION = ""

    def __init__(self, *, skip_bad_records: bool = False, **kwargs):
        self.bad = BadRecords(skip=skip_bad_records)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=FEATURES, homepage=self.HOMEPAGE, citation=self.CITATION, metadata=tfds.core.MetadataDict()
        )

    def _split_readers(self, manual_dir: str) -> dict[str, SplitReader]:
        """Split name -> reader of that split's records, given the manual directory."""
        raise NotImplementedError

    def _evidence_split(self, split: str) -> str:
        """The split whose entries of the evidence map apply to `split` (MIRAGE: "test")."""
        return split

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = str(dl_manager.manual_dir)
        evidence = read_evidence_map(manual_dir)
        return {
            split: self._generate_examples(reader, evidence, self._evidence_split(split))
            for split, reader in self._split_readers(manual_dir).items()
        }

    def _generate_examples(self, reader: SplitReader, evidence: EvidenceMap, evidence_split: str):
        seen: set[str] = set()
        for record in reader(self.bad):
            example = record.to_example()
            extra = evidence.get(record.dataset, {}).get(evidence_split, {}).get(record.id)
            if extra:
                example["evidence_ids"] = list(dict.fromkeys(example["evidence_ids"] + extra))
            if record.id in seen:
                self.bad.handle(f"{record.dataset} record {record.id!r}", "duplicate id in one split")
                continue
            seen.add(record.id)
            yield record.id, example

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config)
        summary = self.bad.summary()
        self.info.metadata.update(summary)
        if self.bad.skipped:
            log.warning("%s: skipped malformed records: %s", self.name, dict(self.bad.skipped))
        if self.bad.filtered:
            log.info("%s: left out on purpose: %s", self.name, dict(self.bad.filtered))
