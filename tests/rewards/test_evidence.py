"""Evidence recall by hand."""

import pytest

from medr3_jax.rewards.evidence import evidence_recall


@pytest.mark.parametrize(
    "retrieved, gold, recall",
    [
        (["PMID:1", "PMID:7", "PMID:9"], ["PMID:7", "PMID:8"], 0.5),
        (["PMID:7", "PMID:8"], ["PMID:7", "PMID:8"], 1.0),
        (["PMID:1"], ["PMID:7"], 0.0),
        ([], ["PMID:7", "PMID:8", "PMID:9"], 0.0),
        (["PMID:7", "PMID:7", "PMID:7"], ["PMID:7", "PMID:8", "PMID:9"], 1 / 3),  # repeats count once
        (["PMID:7"], ["PMID:7", "PMID:7", "PMID:8"], 0.5),  # distinct gold ids
    ],
)
def test_evidence_recall(retrieved, gold, recall):
    assert evidence_recall(retrieved, gold) == pytest.approx(recall)


def test_no_gold_is_none():
    assert evidence_recall(["PMID:1"], []) is None
    assert evidence_recall([], ()) is None
