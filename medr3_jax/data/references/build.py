"""Building reference records for one dataset split, resumably: the authors' pipeline
(`data_construction/` in GitHub 8023looker/Med-R3) over our index and protocol.

    report = build_references(records, teacher=..., grader=..., extractor=..., embed=retriever.encode_queries,
                              embed_id=retriever.embedding_id, out_path=".../references/medqa-train.jsonl",
                              settings=BuildSettings(), identity={...})

For each question, rounds of: the teacher writes a chain (`teachers.py`); a chain that is not
well formed under the med_r3 grammar is dropped; the grader scores it 1-5 with the authors'
rubric and it is kept at `min_grade` or above (`judge_true_false_by_score`: an integer score >= 5);
the extractor turns a kept chain into [head, relation, tail, if_retrieval] triples (asked again
up to `extract_attempts` times when the reply holds none, as they ask until it parses). Rounds
go on until the question has `chains_per_question` references or `max_attempts` chains were
written for it. The kept chains' think texts are embedded with the training encoder.

Questions go in fixed batches of `batch_size`, in id order. After each batch its lines are
appended to the output (references) and to `<out>.failures.jsonl` (questions left without any,
with the count of each failure reason), both flushed to disk, and then `<out>.progress.json`
records their sizes. A rerun truncates both files to the recorded sizes and goes on with the
next batch, so a run killed at any point and rerun writes what an uninterrupted run writes
(byte for byte when the models are deterministic). The progress file also holds the identity of
the run (dataset, questions, models, settings); a rerun with another identity stops with an
error naming what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from medr3_jax.data.prompts import shown_question
from medr3_jax.data.records import QARecord
from medr3_jax.data.references import FAILURES_SUFFIX, Reference
from medr3_jax.data.references.prompts import extraction_prompt, grade_prompt, read_grade, read_triples
from medr3_jax.data.references.teachers import Failure, Teacher
from medr3_jax.progress import Progress
from medr3_jax.protocol import MED_R3

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], np.ndarray]


class BuildError(ValueError):
    """A build that cannot go on as asked (the message says what to change)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildSettings:
    """chains_per_question: references kept per question (the authors' `total_template_num`, 10).
    max_attempts: chains written per question at most (theirs retry without end).
    min_grade: the grader's score a chain needs (theirs: an integer >= 5).
    extract_attempts: asks per kept chain until the reply holds triples.
    batch_size: questions per batch, the unit of progress and of resumption.
    embed_batch: think texts per encoder call. vector_decimals: decimals kept in stored vectors."""

    chains_per_question: int = 10
    max_attempts: int = 30
    min_grade: int = 5
    extract_attempts: int = 3
    batch_size: int = 16
    embed_batch: int = 64
    vector_decimals: int = 6

    def __post_init__(self) -> None:
        for name in ("chains_per_question", "max_attempts", "extract_attempts", "batch_size", "embed_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"BuildSettings.{name}={getattr(self, name)}: must be >= 1")
        if self.max_attempts < self.chains_per_question:
            raise ValueError(
                f"BuildSettings.max_attempts={self.max_attempts} < chains_per_question={self.chains_per_question}"
            )


@dataclasses.dataclass
class BuildReport:
    """What a build did, over all its runs: questions done, references written, questions left
    without any (listed in `failures_path`), questions with fewer than asked, and the count of
    each attempt outcome ("kept", or a failure reason)."""

    out_path: str
    failures_path: str
    questions: int
    done: int = 0
    references: int = 0
    without: int = 0
    short: int = 0
    outcomes: Counter[str] = dataclasses.field(default_factory=Counter)
    complete: bool = False

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"outcomes": dict(sorted(self.outcomes.items()))}


def build_references(
    records: Sequence[QARecord],
    *,
    teacher: Teacher,
    grader: Any,
    extractor: Any,
    embed: Embed | None,
    embed_id: str | None,
    out_path: str,
    settings: BuildSettings = BuildSettings(),
    identity: dict[str, Any] | None = None,
) -> BuildReport:
    """Builds (or resumes building) the references of `records` into `out_path`; see the module
    docstring. `grader` and `extractor` are judges (`rewards.judge.Judge`). `identity` names the
    models and data (never keys) so that a resumed run is checked to be the same run."""
    failures_path = out_path.removesuffix(".jsonl") + FAILURES_SUFFIX
    progress_path = out_path.removesuffix(".jsonl") + ".progress.json"
    identity = (identity or {}) | {
        "questions": hashlib.sha256("\n".join(f"{r.dataset}\t{r.id}" for r in records).encode()).hexdigest()[:16],
        "count": len(records),
        "settings": dataclasses.asdict(settings),
        "embed_id": embed_id,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    state = _resume(progress_path, identity, out_path, failures_path)
    report = BuildReport(out_path, failures_path, len(records), **state["report"])
    report.outcomes = Counter(state["report"]["outcomes"])
    batches = [list(records[s : s + settings.batch_size]) for s in range(0, len(records), settings.batch_size)]
    start, started_at, done_before = state["batches"], time.monotonic(), report.done
    if start:
        log.info("resuming %s at batch %d of %d (%d questions done)", out_path, start + 1, len(batches), report.done)
    with Progress(f"building references for {len(records)} questions", len(records), "questions") as bar:
        bar.update(report.done)
        for b in range(start, len(batches)):
            batch = batches[b]
            kept, failed = _batch(batch, b, teacher, grader, extractor, settings, report.outcomes)
            refs = _embedded(batch, kept, embed, embed_id, settings)
            lines = [ref.to_line() + "\n" for ref in refs]
            failure_lines = [json.dumps(f, ensure_ascii=False) + "\n" for f in failed]
            state["out_bytes"] = _append(out_path, lines, state["out_bytes"])
            state["failures_bytes"] = _append(failures_path, failure_lines, state["failures_bytes"])
            per_question = Counter((r.dataset, r.id) for r in refs)
            report.done += len(batch)
            bar.update(len(batch))
            report.references += len(refs)
            report.without += len(failed)
            report.short += sum(0 < per_question[(r.dataset, r.id)] < settings.chains_per_question for r in batch)
            state["batches"] = b + 1
            report.complete = b + 1 == len(batches)
            state["report"] = _report_state(report)
            _write_json(progress_path, state)
            _log_progress(
                report, b + 1, len(batches), (report.done - done_before) / max(time.monotonic() - started_at, 1e-9)
            )
    if not batches or start == len(batches):
        report.complete = True
        state["report"] = _report_state(report)
        _write_json(progress_path, state)
    return report


# ---- one batch --------------------------------------------------------------------------------
def _batch(
    batch: list[QARecord], index: int, teacher: Teacher, grader: Any, extractor: Any, settings: BuildSettings,
    outcomes: Counter[str],
) -> tuple[list[list[tuple[str, int, list[list[Any]]]]], list[dict[str, Any]]]:  # fmt: skip
    """(per question, its kept (chain, grade, triples)), and a failure entry per question left
    without any."""
    questions = [shown_question(r, "open")[0] for r in batch]
    kept: list[list[tuple[str, int, list[list[Any]]]]] = [[] for _ in batch]
    reasons: list[Counter[str]] = [Counter() for _ in batch]
    attempts = [0] * len(batch)
    pending = list(range(len(batch)))
    round_ = 0
    while pending:
        chains = teacher.write(
            [batch[i] for i in pending], [questions[i] for i in pending], seed=index * 10_007 + round_
        )
        round_ += 1
        graded: list[tuple[int, str]] = []
        for i, chain in zip(pending, chains):
            attempts[i] += 1
            if isinstance(chain, Failure):
                reasons[i][chain.reason] += 1
            elif MED_R3.format_score(chain, retrieval=True) != 1.0:
                reasons[i]["malformed"] += 1
            else:
                graded.append((i, chain))
        passed = _grade(graded, batch, questions, grader, settings.min_grade, reasons)
        for (i, chain, grade), triples in zip(passed, _extract([c for _, c, _ in passed], extractor, settings)):
            if triples is None:
                reasons[i]["extract_unreadable"] += 1
            else:
                kept[i].append((chain, grade, triples))
        pending = [
            i for i in pending if len(kept[i]) < settings.chains_per_question and attempts[i] < settings.max_attempts
        ]
    failed = []
    for i, record in enumerate(batch):
        outcomes.update(reasons[i])
        outcomes["kept"] += len(kept[i])
        if not kept[i]:
            failed.append({"dataset": record.dataset, "id": record.id, "attempts": attempts[i],
                           "reasons": dict(sorted(reasons[i].items()))})  # fmt: skip
    return kept, failed


def _grade(
    graded: list[tuple[int, str]], batch: list[QARecord], questions: list[str], grader: Any, min_grade: int,
    reasons: list[Counter[str]],
) -> list[tuple[int, str, int]]:  # fmt: skip
    """The chains the grader scores at `min_grade` or above, with their grade."""
    replies = grader.complete([grade_prompt(batch[i], questions[i], chain) for i, chain in graded]) if graded else []
    passed = []
    for (i, chain), reply in zip(graded, replies):
        grade = read_grade(reply) if reply is not None else None
        if reply is None:
            reasons[i]["grader_failed"] += 1
        elif grade is None:
            reasons[i]["grade_unreadable"] += 1
        elif grade < min_grade:
            reasons[i]["below_grade"] += 1
        else:
            passed.append((i, chain, grade))
    return passed


def _extract(chains: list[str], extractor: Any, settings: BuildSettings) -> list[list[list[Any]] | None]:
    """Triples per chain; a reply without any is asked again, `extract_attempts` asks in all."""
    out: list[list[list[Any]] | None] = [None] * len(chains)
    pending = list(range(len(chains)))
    for _ in range(settings.extract_attempts):
        if not pending:
            break
        replies = extractor.complete([extraction_prompt(chains[i]) for i in pending])
        for i, reply in zip(pending, replies):
            out[i] = read_triples(reply) if reply is not None else None
        pending = [i for i in pending if out[i] is None]
    return out


def _embedded(
    batch: list[QARecord], kept: list[list[tuple[str, int, list[list[Any]]]]], embed: Embed | None,
    embed_id: str | None, settings: BuildSettings,
) -> list[Reference]:  # fmt: skip
    """The batch's references in question order, each with its think text's vector (none
    without an encoder: training then embeds the text)."""
    refs = [Reference(r.dataset, r.id, chain, tuple(tuple(t) for t in triples), float(grade))
            for r, chains in zip(batch, kept) for chain, grade, triples in chains]  # fmt: skip
    if embed is None or not refs:
        return refs
    texts = [ref.text for ref in refs]
    vectors = np.concatenate([np.asarray(embed(texts[s : s + settings.embed_batch]), np.float32)
                              for s in range(0, len(texts), settings.embed_batch)])  # fmt: skip
    if vectors.shape[0] != len(refs):
        raise BuildError(f"the encoder returned {vectors.shape[0]} vectors for {len(refs)} texts")
    rounded = np.round(vectors.astype(np.float64), settings.vector_decimals)
    return [dataclasses.replace(ref, vector=tuple(float(x) for x in row), encoder=embed_id)
            for ref, row in zip(refs, rounded)]  # fmt: skip


# ---- files ----------------------------------------------------------------------------------
def _resume(progress_path: str, identity: dict[str, Any], out_path: str, failures_path: str) -> dict[str, Any]:
    """The recorded state (after truncating the outputs to it), or a fresh one."""
    report = {"done": 0, "references": 0, "without": 0, "short": 0, "outcomes": {}, "complete": False}
    fresh = {"identity": identity, "batches": 0, "out_bytes": 0, "failures_bytes": 0, "report": report}
    if not os.path.exists(progress_path):
        for path in (out_path, failures_path):  # written by a run killed before its first batch was recorded
            if os.path.exists(path) and os.path.getsize(path):
                raise BuildError(
                    f"{path} exists but {progress_path} does not: not this builder's output, or its progress "
                    "file was deleted; move it away or pass --restart"
                )
        return fresh
    with open(progress_path, encoding="utf-8") as fh:
        state = json.load(fh)
    recorded = state.get("identity", {})
    differs = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
    if differs:
        detail = "; ".join(f"{k}: {recorded.get(k)!r} then, {identity.get(k)!r} now" for k in differs)
        raise BuildError(f"{progress_path}: this run differs from the one being resumed ({detail}); "
                         "rerun with the same settings, or pass --restart to start over")  # fmt: skip
    for path, size in ((out_path, state["out_bytes"]), (failures_path, state["failures_bytes"])):
        if not os.path.exists(path) or os.path.getsize(path) < size:
            raise BuildError(f"{path}: shorter than the {size} bytes {progress_path} records; pass --restart")
        with open(path, "r+b") as fh:
            fh.truncate(size)
    return state


def restart(out_path: str) -> None:
    """Deletes a build's output, failure list and progress (`--restart`)."""
    stem = out_path.removesuffix(".jsonl")
    for path in (out_path, stem + FAILURES_SUFFIX, stem + ".progress.json"):
        if os.path.exists(path):
            os.remove(path)


def _append(path: str, lines: list[str], size: int) -> int:
    """Appends `lines` at byte `size` of `path`, flushed to disk; the new size."""
    data = "".join(lines).encode("utf-8")
    with open(path, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return size + len(data)


def _write_json(path: str, obj: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _report_state(report: BuildReport) -> dict[str, Any]:
    return {"done": report.done, "references": report.references, "without": report.without, "short": report.short,
            "outcomes": dict(sorted(report.outcomes.items())), "complete": report.complete}  # fmt: skip


def _log_progress(report: BuildReport, batch: int, batches: int, questions_per_s: float) -> None:
    left = (report.questions - report.done) / questions_per_s if questions_per_s > 0 else 0.0
    log.info(
        "batch %d/%d: %d/%d questions, %d references, %d questions without any; %.2f questions/min; ETA %s",
        batch, batches, report.done, report.questions, report.references, report.without,
        questions_per_s * 60, _duration(left),
    )  # fmt: skip


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
