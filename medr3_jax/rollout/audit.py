"""A person-readable record of each rollout: one JSON line per trajectory, per step.

    write_audit(f"{workdir}/rollouts/step_{step:06d}.jsonl", step, rollout, records, scored,
                questions=shown, passage_title=lambda pid: retriever.passage(pid).title)

Each line holds the question (as the policy saw it), its id, the gold answer text and the
options, the assistant prefix and the response text (inserted documents included), the token
provenance as runs (`prompt:412 sampled:35 document:540 sampled:80`), the queries, the
retrieved passage ids with their titles, the flags, the stop reason, the format verdict, why
the answer got its value, and every reward component. `python -m medr3_jax.rewards.score`
reads these files back, so logged rollouts can be rescored after a change of weights.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Callable, Protocol, Sequence

import numpy as np

from medr3_jax import fileio
from medr3_jax.data.records import QARecord
from medr3_jax.protocol import BAD_SEARCH_FLAGS
from medr3_jax.rollout.engine import DOCUMENT, PAD, PROMPT, SAMPLED, Rollout
from medr3_jax.sampling import StopReason

_NAMES = {PROMPT: "prompt", SAMPLED: "sampled", DOCUMENT: "document"}


class ScoredRows(Protocol):
    """What the audit reads of `rewards.Scored`."""

    totals: np.ndarray
    components: dict[str, np.ndarray]
    format_ok: np.ndarray
    answer_reasons: list[str]


def provenance_runs(provenance: np.ndarray) -> str:
    """'prompt:412 sampled:35 document:540 ...' for one row (padding left out)."""
    runs = [(code, len(list(group))) for code, group in itertools.groupby(provenance.tolist()) if code != PAD]
    return " ".join(f"{_NAMES[code]}:{n}" for code, n in runs)


def audit_rows(
    step: int,
    rollout: Rollout,
    records: Sequence[QARecord],
    scored: ScoredRows,
    questions: Sequence[str] | None = None,
    passage_title: Callable[[str], str] | None = None,
) -> list[dict]:
    """One dict per trajectory; `records[i]` is row i's question, `questions[i]` its text as shown."""
    out = []
    value = lambda x: None if math.isnan(float(x)) else round(float(x), 6)  # noqa: E731
    for i in range(rollout.num_rows):
        record = records[i]
        out.append(
            {
                "step": step,
                "row": i,
                "group": int(rollout.group_ids[i]),
                "question_id": record.id,
                "dataset": record.dataset,
                "question": questions[i] if questions is not None else record.question,
                "options": dict(record.options),
                "gold": record.answer or record.answer_text,
                "answer": record.answer_text or record.options.get(record.answer, ""),
                "reward": value(scored.totals[i]),
                "format_ok": bool(scored.format_ok[i]),
                "answer_reason": scored.answer_reasons[i],
                "components": {name: value(values[i]) for name, values in scored.components.items()},
                "flags": sorted(rollout.flags[i]),
                "bad_search": bool(rollout.flags[i] & BAD_SEARCH_FLAGS),
                "stop": StopReason(int(rollout.stop_reasons[i])).name,
                "tokens": provenance_runs(rollout.provenance[i]),
                "response_tokens": int(rollout.response_lengths[i]),
                "queries": rollout.queries[i],
                "retrieved": [
                    {"id": pid, "title": passage_title(pid) if passage_title else None}
                    for pid in rollout.retrieved_ids[i]
                ],
                "prefix": rollout.prefixes[i],
                "text": rollout.texts[i],
            }
        )
    return out


def write_audit(
    path: str,
    step: int,
    rollout: Rollout,
    records: Sequence[QARecord],
    scored: ScoredRows,
    *,
    questions: Sequence[str] | None = None,
    passage_title: Callable[[str], str] | None = None,
) -> str:
    """Writes the step's audit JSONL atomically, a crash never leaving half a file: locally a
    temporary file renamed over it; under a URL (gs://) one object, which appears whole or not
    at all (`fileio.atomic_write_text`)."""
    rows = audit_rows(step, rollout, records, scored, questions, passage_title)
    fileio.atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path
