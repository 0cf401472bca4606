"""rewards.graph: normalisation, transitive closure, Jaccards and the max over references, all
against numbers worked by hand; GraphReward with a canned judge and hand-picked embeddings."""

import logging

import numpy as np
import pytest

from medr3_jax.rewards.graph import (
    GraphReward,
    ReferenceGraph,
    clipped_cosine,
    entities,
    entity_jaccard,
    graph_score,
    jaccard,
    normalize,
    normalize_triples,
    path_jaccard,
    reachable_pairs,
)
from medr3_jax.rewards.judge import JudgeStats

# Think graph T: insulin -> glucose -> polyuria.   Reference R: insulin -> glucose, insulin -> diabetes.
T = [("Insulin", "lowers", "glucose"), ("Glucose", "causes", "polyuria")]
R = [("insulin", "lowers", "glucose"), ("insulin", "treats", "diabetes")]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  Type 2\n  Diabetes. ", "type 2 diabetes"),
        ('"Insulin",', "insulin"),
        ("(HER2+)", "her2+"),  # the sign is part of the name
        ("HER2-", "her2-"),
        ("“血糖”。", "血糖"),
        (" ... ", ""),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_normalize_triples_drops_empty_ends():
    assert normalize_triples([(" A. ", " Causes ", "B"), ("...", "x", "C"), ("D", "", "E")]) == [
        ("a", "causes", "b"),
        ("d", "", "e"),
    ]


def test_entities_are_heads_and_tails():
    assert entities(T) == {"insulin", "glucose", "polyuria"}


def test_transitive_closure():
    chain = [("a", "r", "b"), ("b", "r", "c"), ("c", "r", "d")]
    # a reaches b, c, d; b reaches c, d; c reaches d: 3 + 2 + 1 = 6 pairs.
    assert reachable_pairs(chain) == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")}
    # A cycle relates a and b both ways; the loops (a, a) and (b, b) are left out.
    assert reachable_pairs([("a", "r", "b"), ("B.", "r", "A")]) == {("a", "b"), ("b", "a")}
    # Direction matters: x <- y gives only (y, x).
    assert reachable_pairs([("y", "r", "x")]) == {("y", "x")}


def test_jaccards_by_hand():
    # entities: T {insulin, glucose, polyuria}, R {insulin, glucose, diabetes}: 2 shared of 4 -> 0.5
    assert entity_jaccard(T, R) == 0.5
    # paths: T {(ins,glu), (glu,pol), (ins,pol)}, R {(ins,glu), (ins,dia)}: 1 shared of 4 -> 0.25
    assert path_jaccard(T, R) == 0.25
    assert path_jaccard(T, T) == entity_jaccard(T, T) == 1.0
    assert jaccard(set(), set()) == 0.0  # no graph on either side: no evidence of reasoning
    assert entity_jaccard([], R) == path_jaccard([], R) == 0.0


def test_clipped_cosine():
    assert clipped_cosine(np.array([1.0, 0.0]), np.array([0.6, 0.8])) == pytest.approx(0.6)
    assert clipped_cosine(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == 0.0  # negative -> 0
    assert clipped_cosine(np.array([0.0, 0.0]), np.array([1.0, 0.0])) == 0.0  # zero vector


def test_graph_score_is_max_over_references_of_the_mean():
    same = [("INSULIN.", "Lowers", " glucose"), ("glucose", "causes", "Polyuria")]  # T after normalisation
    think = np.array([1.0, 0.0])
    refs = np.array([[0.6, 0.8], [-1.0, 0.0]])
    # vs R:    (path 0.25 + entity 0.5 + cos 0.6) / 3 = 0.45
    assert graph_score(T, [R], think, refs[:1]) == pytest.approx(0.45)
    # vs same: (1 + 1 + clip(-1) = 0) / 3 = 2/3; the max over both is 2/3
    assert graph_score(T, [R, same], think, refs) == pytest.approx(2 / 3)
    # no triples at all still earns the cosine share: (0 + 0 + 0.6) / 3 = 0.2
    assert graph_score([], [R], think, refs[:1]) == pytest.approx(0.2)


def test_graph_score_rejects_missing_references_and_bad_shapes():
    with pytest.raises(ValueError, match="no reference graphs"):
        graph_score(T, [], np.ones(2), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="one row per reference"):
        graph_score(T, [R, R], np.ones(2), np.ones((1, 2)))


class _CannedJudge:
    def __init__(self, replies):
        self.replies = replies
        self.prompts = []
        self.stats = JudgeStats()

    def complete(self, prompts):
        self.prompts.extend(prompts)
        return [self.replies[p.split("Reasoning:\n")[1].split("\n")[0]] for p in prompts]


VECTORS = {"think one": [1.0, 0.0], "think two": [0.0, 1.0], "": [0.0, 1.0], "ref text": [0.6, 0.8]}


def _embed(texts):
    assert len(texts) == len(set(texts)), "each distinct text is embedded once"
    return np.array([VECTORS[t] for t in texts])


def test_graph_reward_scores_each_item():
    judge = _CannedJudge(
        {
            "think one": '```json\n{"triples": [["insulin", "lowers", "glucose"], ["glucose", "causes", "polyuria"]]}\n```',
            "think two": "I cannot do that.",  # unreadable -> None for this item
        }
    )
    ref = ReferenceGraph(triples=tuple(R), text="ref text")
    reward = GraphReward(judge, _embed)
    scores = reward(["think one", "think two", "no refs", ""], [[ref], [ref], [], [ref]])
    # item 0: (0.25 + 0.5 + 0.6) / 3 = 0.45 (worked above); item 1: unreadable reply; item 2: no
    # reference; item 3: empty think text, no triples and no request: (0 + 0 + cos 0.8) / 3.
    assert scores[0] == pytest.approx(0.45)
    assert scores[1] is None and scores[2] is None
    assert scores[3] == pytest.approx(0.8 / 3)
    assert len(judge.prompts) == 2  # neither the reference-less nor the empty item was sent
    assert judge.stats.bad_replies == 1


def test_graph_reward_disabled_warns_once(caplog):
    ref = ReferenceGraph(triples=tuple(R), text="ref text")
    with caplog.at_level(logging.WARNING, logger="medr3_jax.rewards.graph"):
        no_judge = GraphReward(None, _embed)
        assert no_judge(["think one"], [[ref]]) is None
        assert no_judge(["think two"], [[ref]]) is None
        no_refs = GraphReward(_CannedJudge({}), _embed)
        assert no_refs(["think one"], [[]]) is None
        assert no_refs(["think one", "think two"], [[], []]) is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "reasoning-graph reward disabled: no judge",
        "reasoning-graph reward disabled: no reference graphs",
    ]


def test_graph_reward_checks_lengths():
    with pytest.raises(ValueError, match="2 think texts but 1 reference lists"):
        GraphReward(_CannedJudge({}), _embed)(["a", "b"], [[]])
