"""Evidence recall (stage 2): how much of the gold evidence the searches retrieved.

evidence_recall(["PMID:1", "PMID:7", "PMID:9"], ["PMID:7", "PMID:8"])   -> 0.5
evidence_recall(["PMID:1"], [])                                         -> None
"""

from __future__ import annotations

from typing import Sequence


def evidence_recall(retrieved_ids: Sequence[str], gold_ids: Sequence[str]) -> float | None:
    """|gold ∩ retrieved| / |gold| over distinct passage ids; None when there is no gold (the
    component then contributes nothing rather than a zero the policy cannot improve)."""
    gold = set(gold_ids)
    if not gold:
        return None
    return len(gold & set(retrieved_ids)) / len(gold)
