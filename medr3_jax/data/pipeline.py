"""The question stream of a training run: deterministic, per-process, resumable batches of
tokenised prompts (grain `MapDataset`: shard -> shuffle by seed -> repeat -> tokenise -> batch).

    stream = QuestionStream(records, tokenizer=tok, style=PromptStyle(mode="search"),
                            batch_size=8, seed=0, buckets=(256, 512))
    batch = stream.next()                 # PromptBatch(records, prompts, bucket, position)
    saved = stream.position               # store with the checkpoint ...
    stream.seek(saved)                    # ... and the resumed run continues with the next batch

Each epoch is reshuffled (grain reseeds per epoch). Process p of P reads every P-th record of
the id-sorted list, so the processes' streams are disjoint and together cover the data.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import grain
import jax

from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import DataError, QARecord
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.protocol import MED_R3, Protocol

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    records: tuple[QARecord, ...]
    prompts: tuple[tuple[int, ...], ...]  # token ids of each rendered prompt
    bucket: int  # the smallest length bucket that holds every prompt of the batch
    position: int  # index of this batch in the stream (its saveable position)


def length_bucket(length: int, buckets: Sequence[int], record_id: str = "") -> int:
    """The smallest bucket >= length; a prompt longer than every bucket is an error."""
    for b in sorted(buckets):
        if length <= b:
            return b
    raise DataError(
        f"record {record_id!r}: prompt of {length} tokens is longer than the largest bucket {max(buckets)}; "
        "raise the largest prompt bucket"
    )


class QuestionStream:
    """Batches of prompts from `records` (see the module docstring)."""

    def __init__(
        self,
        records: Sequence[QARecord],
        *,
        tokenizer: Tokenizer,
        style: PromptStyle,
        batch_size: int,
        seed: int = 0,
        buckets: Sequence[int] = (256, 512, 1024),
        num_epochs: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        protocol: Protocol = MED_R3,
        max_searches: int = 4,
    ):
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
        records = sorted(records, key=lambda r: (r.dataset, r.id))
        usable = len(records) - len(records) % process_count
        if usable < len(records):
            log.info(
                "question stream: %d records left out so that %d processes get equal shares",
                len(records) - usable,
                process_count,
            )
        local = records[:usable][process_index::process_count]
        if len(local) < batch_size:
            raise DataError(
                f"{len(local)} questions per process but batch_size={batch_size}: add data or lower the batch size"
            )
        self.batch_size, self.buckets = batch_size, tuple(sorted(buckets))
        self.num_epochs = num_epochs
        self._tokenizer, self._style = tokenizer, style
        self._protocol, self._max_searches = protocol, max_searches
        dataset = grain.MapDataset.source(local).seed(seed).shuffle().repeat(num_epochs)
        self._batches = dataset.map(self._tokenize).batch(batch_size, drop_remainder=True, batch_fn=tuple)
        self.position = 0
        self.questions_per_process = len(local)

    def _tokenize(self, record: QARecord) -> tuple[QARecord, tuple[int, ...]]:
        text = render_prompt(record, self._style, self._tokenizer, protocol=self._protocol,
                             max_searches=self._max_searches)  # fmt: skip
        ids = tuple(self._tokenizer.encode(text))
        length_bucket(len(ids), self.buckets, record.id)
        return record, ids

    @property
    def batches_per_epoch(self) -> int:
        return self.questions_per_process // self.batch_size

    def __len__(self) -> int:
        """Number of batches in the stream (very large when it repeats forever)."""
        return len(self._batches)

    def seek(self, position: int) -> None:
        """Continue from batch `position` (the `position` saved with a checkpoint)."""
        if position < 0 or (self.num_epochs is not None and position > len(self._batches)):
            raise DataError(f"stream position {position} is outside 0..{len(self._batches)}")
        self.position = position

    def next(self) -> PromptBatch:
        if self.num_epochs is not None and self.position >= len(self._batches):
            raise StopIteration
        items = self._batches[self.position]
        records, prompts = tuple(r for r, _ in items), tuple(p for _, p in items)
        batch = PromptBatch(records, prompts, length_bucket(max(map(len, prompts)), self.buckets), self.position)
        self.position += 1
        return batch

    def __iter__(self):
        while True:
            try:
                yield self.next()
            except StopIteration:
                return
