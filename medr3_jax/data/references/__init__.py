"""Reference reasoning records: for a question, a good reasoning chain written with retrieval,
its knowledge graph and the text whose embedding the graph reward compares with (the authors'
`reasoning_templates`, `reasoning_KG` and `reasoning_vector`, built by `data_construction/` in
GitHub 8023looker/Med-R3). Several references per question are allowed.

    refs = read_references("~/tensorflow_datasets/references")  # a file, or a folder of *.jsonl
    refs[("medqa", "0000")][0].triples                        # (("atrial fibrillation", ...), ...)

`python -m medr3_jax.data.references` builds them (`references/build.py`) into
`<data_dir>/references/<dataset>-<split>.jsonl`, beside the TFDS data; training reads that folder
and joins the references onto its records by (dataset, id).

One JSON object per line: `dataset`, `id` (the question's), `chain` (the reasoning in the med_r3
format, `<think>…<search>…</search><document>…</document>…</think><answer>…</answer>`),
`triples` ([head, relation, tail, if_retrieval] entries), optional `grade` (kept at or above
the builder's threshold), `vector` and `encoder` (an embedding of the chain's think text and
the `Retriever.embedding_id` of the encoder that made it: the graph reward uses the vector only
when its own encoder has that id, and embeds the text otherwise) and any other field (ignored).
A line that does not parse is logged with its file and line, counted and left out: the run
goes on without that reference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from typing import Any

from medr3_jax.protocol import med_r3_think_and_answer

log = logging.getLogger(__name__)

REFERENCES_DIR = "references"  # under a TFDS data_dir: one <dataset>-<split>.jsonl per built split
FAILURES_SUFFIX = ".failures.jsonl"  # the builder's list of questions without references (not read)


@dataclasses.dataclass(frozen=True)
class Reference:
    """One reference reasoning of one question."""

    dataset: str
    id: str
    chain: str
    triples: tuple[tuple[Any, ...], ...]
    grade: float | None = None
    vector: tuple[float, ...] | None = None
    encoder: str | None = None  # embedding_id of the encoder that made `vector`

    @property
    def text(self) -> str:
        """The chain's thinking without search and document blocks: what the cosine term embeds
        (the authors embed the think text of a rollout the same way)."""
        return med_r3_think_and_answer(self.chain)[0]

    def as_json(self) -> str:
        """The graph as the JSON array the extraction prompt shows (the authors' `reasoning_KG`)."""
        return json.dumps([list(entry) for entry in self.triples], ensure_ascii=False)

    def to_line(self) -> str:
        """The record as one JSONL line (no newline), the fields in a fixed order."""
        obj: dict[str, Any] = {"dataset": self.dataset, "id": self.id, "chain": self.chain}
        if self.grade is not None:
            obj["grade"] = int(self.grade) if float(self.grade).is_integer() else self.grade
        obj["triples"] = [list(entry) for entry in self.triples]
        if self.vector is not None:
            obj["vector"], obj["encoder"] = list(self.vector), self.encoder
        return json.dumps(obj, ensure_ascii=False)


@dataclasses.dataclass
class ReferenceStats:
    """What reading reference files found: references read, lines left out by reason."""

    read: int = 0
    bad_lines: Counter[str] = dataclasses.field(default_factory=Counter)


def parse_reference(obj: Any, where: str) -> Reference:
    """One reference from a parsed line; ValueError naming `where` and the field when malformed."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: not a JSON object")
    for name in ("dataset", "id", "chain"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise ValueError(f"{where}: field {name!r} missing or not a non-empty string")
    triples = obj.get("triples")
    if not isinstance(triples, list) or not all(
        isinstance(t, list) and len(t) >= 3 and all(isinstance(x, str) for x in t[:3]) for t in triples
    ):
        raise ValueError(f"{where}: field 'triples' must be a list of [head, relation, tail, if_retrieval] entries")
    vector = obj.get("vector")
    if vector is not None and not (isinstance(vector, list) and all(isinstance(x, (int, float)) for x in vector)):
        raise ValueError(f"{where}: field 'vector' must be a list of numbers")
    grade = obj.get("grade")
    if grade is not None and (isinstance(grade, bool) or not isinstance(grade, (int, float))):
        raise ValueError(f"{where}: field 'grade' must be a number")
    encoder = obj.get("encoder")
    if encoder is not None and not isinstance(encoder, str):
        raise ValueError(f"{where}: field 'encoder' must be a string (the embedding_id of the vector's encoder)")
    return Reference(
        dataset=obj["dataset"],
        id=obj["id"],
        chain=obj["chain"],
        triples=tuple(tuple(t) for t in triples),
        grade=None if grade is None else float(grade),
        vector=None if vector is None else tuple(float(x) for x in vector),
        encoder=encoder,
    )


def read_references(path: str, stats: ReferenceStats | None = None) -> dict[tuple[str, str], list[Reference]]:
    """(dataset, question id) -> references, from one JSONL file or every `*.jsonl` of a folder
    (in name order; the builder's `*.failures.jsonl` lists are not references). Bad lines are
    logged (file:line and why), counted in `stats` and left out; a missing path is an error."""
    stats = stats if stats is not None else ReferenceStats()
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        names = [n for n in sorted(os.listdir(path)) if n.endswith(".jsonl") and not n.endswith(FAILURES_SUFFIX)]
        files = [os.path.join(path, name) for name in names]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(f"reference file {path}: no such file or folder")
    out: dict[tuple[str, str], list[Reference]] = {}
    for file in files:
        _read_file(file, stats, out)
    return out


def _read_file(path: str, stats: ReferenceStats, out: dict[tuple[str, str], list[Reference]]) -> None:
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                ref = parse_reference(json.loads(line), where)
            except json.JSONDecodeError as err:
                _bad(stats, "not JSON", f"{where}: not JSON ({err.msg} at column {err.colno})")
                continue
            except ValueError as err:
                _bad(stats, "malformed", str(err))
                continue
            out.setdefault((ref.dataset, ref.id), []).append(ref)
            stats.read += 1


def _bad(stats: ReferenceStats, reason: str, message: str) -> None:
    stats.bad_lines[reason] += 1
    log.warning("skipping reference line %s", message)
