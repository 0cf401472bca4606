"""A person-readable record of each rollout: one JSON line per trajectory, per step.

    write_audit(f"{workdir}/rollouts/step_{step:06d}.jsonl", step, rollout, records, totals,
                components, passage_title=lambda pid: retriever.passage(pid).title)

Each line holds the question id, the response text (inserted documents included), the token
provenance as runs (`prompt:412 sampled:35 document:540 sampled:80`), the queries, the
retrieved passage ids with their titles, the flags, the stop reason, and every reward component.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from typing import Callable, Mapping, Sequence

import numpy as np

from medr3_jax.data.records import QARecord
from medr3_jax.rollout.engine import DOCUMENT, PAD, PROMPT, SAMPLED, Rollout
from medr3_jax.sampling import StopReason

_NAMES = {PROMPT: "prompt", SAMPLED: "sampled", DOCUMENT: "document"}


def provenance_runs(provenance: np.ndarray) -> str:
    """'prompt:412 sampled:35 document:540 ...' for one row (padding left out)."""
    runs = [(code, len(list(group))) for code, group in itertools.groupby(provenance.tolist()) if code != PAD]
    return " ".join(f"{_NAMES[code]}:{n}" for code, n in runs)


def audit_rows(
    step: int,
    rollout: Rollout,
    records: Sequence[QARecord],
    totals: np.ndarray,
    components: Mapping[str, np.ndarray],
    passage_title: Callable[[str], str] | None = None,
) -> list[dict]:
    """One dict per trajectory; `records[i]` is row i's question."""
    out = []
    for i in range(rollout.num_rows):
        value = lambda x: None if math.isnan(float(x)) else round(float(x), 6)  # noqa: E731
        out.append(
            {
                "step": step,
                "row": i,
                "group": int(rollout.group_ids[i]),
                "question_id": records[i].id,
                "dataset": records[i].dataset,
                "gold": records[i].answer or records[i].answer_text,
                "reward": value(totals[i]),
                "components": {name: value(values[i]) for name, values in components.items()},
                "flags": sorted(rollout.flags[i]),
                "stop": StopReason(int(rollout.stop_reasons[i])).name,
                "tokens": provenance_runs(rollout.provenance[i]),
                "queries": rollout.queries[i],
                "retrieved": [
                    {"id": pid, "title": passage_title(pid) if passage_title else None}
                    for pid in rollout.retrieved_ids[i]
                ],
                "text": rollout.texts[i],
            }
        )
    return out


def write_audit(path: str, step: int, rollout: Rollout, records: Sequence[QARecord], totals: np.ndarray,
                components: Mapping[str, np.ndarray], passage_title: Callable[[str], str] | None = None) -> str:  # fmt: skip
    """Writes the step's audit JSONL (atomically: a crash never leaves half a file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in audit_rows(step, rollout, records, totals, components, passage_title):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
