"""The one record every medical QA benchmark is read into, and the bad-input policy.

    record = QARecord(id="0000", dataset="medqa", question="A 45-year-old ...",
                      options={"A": "...", "B": "..."}, answer="B", answer_text="...")

Multiple-choice datasets fill `options` and `answer` (the gold letter); open-ended ones
(RareArena) leave them empty and carry the gold in `answer_text`. `evidence_ids` are corpus
passage ids in MedRAG's spelling (`"PMID:<pmid>"` for PubMed abstracts).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any, Mapping

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"


class DataError(ValueError):
    """Bad benchmark input; the message names the file and line (or record)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class QARecord:
    id: str
    dataset: str
    question: str
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)  # letter -> text, in letter order
    answer: str = ""  # gold letter; "" for open-ended records
    answer_text: str = ""  # gold option text, or the open-ended gold answer
    open_question: str = ""  # the question as it stands without options, when it can
    context: str = ""  # supplied context (PubMedQA abstracts); prompts decide whether to show it
    evidence_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        letters = list(self.options)
        if letters != list(LETTERS[: len(letters)]):
            raise DataError(f"record {self.id!r}: option letters {letters} are not A, B, C, ... in order")
        if self.options and self.answer not in self.options:
            raise DataError(f"record {self.id!r}: gold letter {self.answer!r} is not among the options {letters}")
        if not self.options and not self.answer_text:
            raise DataError(f"record {self.id!r}: no options and no gold answer text")

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.options)

    @property
    def wrong_options(self) -> dict[str, str]:
        return {k: v for k, v in self.options.items() if k != self.answer}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what `prepare --dump` prints)."""
        out = dataclasses.asdict(self)
        out["options"] = dict(self.options)
        out["evidence_ids"] = list(self.evidence_ids)
        return out

    def to_example(self) -> dict[str, Any]:
        """The TFDS example (flat features: options as two parallel sequences)."""
        return {
            "id": self.id,
            "dataset": self.dataset,
            "question": self.question,
            "option_letters": list(self.options),
            "option_texts": list(self.options.values()),
            "answer": self.answer,
            "answer_text": self.answer_text,
            "open_question": self.open_question,
            "context": self.context,
            "evidence_ids": list(self.evidence_ids),
        }

    @classmethod
    def from_example(cls, example: Mapping[str, Any]) -> QARecord:
        """Inverse of `to_example`; accepts the bytes that `tfds.data_source` returns."""
        text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)  # noqa: E731
        letters = [text(v) for v in example["option_letters"]]
        texts = [text(v) for v in example["option_texts"]]
        return cls(
            id=text(example["id"]),
            dataset=text(example["dataset"]),
            question=text(example["question"]),
            options=dict(zip(letters, texts, strict=True)),
            answer=text(example["answer"]),
            answer_text=text(example["answer_text"]),
            open_question=text(example["open_question"]),
            context=text(example["context"]),
            evidence_ids=tuple(text(v) for v in example["evidence_ids"]),
        )


class BadRecords:
    """What happens to a malformed input record: raise (default) or skip, count and log.

    Readers call `bad.handle(where, why)` at each malformed record; with `skip=False` that raises
    `DataError(f"{where}: {why}")`, otherwise the record is dropped, counted by reason, and
    logged. `filtered` counts records left out on purpose (e.g. BioASQ non-yes/no questions).
    """

    def __init__(self, skip: bool = False):
        self.skip = skip
        self.skipped: Counter[str] = Counter()
        self.filtered: Counter[str] = Counter()

    def handle(self, where: str, why: str) -> None:
        if not self.skip:
            raise DataError(f"{where}: {why}")
        self.skipped[why.split(":")[0]] += 1
        log.warning("skipping bad record at %s: %s", where, why)

    def filter(self, reason: str) -> None:
        self.filtered[reason] += 1

    def summary(self) -> dict[str, dict[str, int]]:
        return {"skipped": dict(self.skipped), "filtered": dict(self.filtered)}
