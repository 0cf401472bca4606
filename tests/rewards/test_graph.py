"""rewards.graph, the authors' reasoning-graph score: multi-hop paths, Jaccards and cosine by hand
and against our port of their functions (tests/authors_reference.py: `graph_logical_score`,
`graph_statistic_score`, `graph_semantic_score`, `normalize_reasoning_reward` of
`contrib/med_reasoning_logical.py`); GraphReward with a canned judge and hand-picked embeddings."""

import json
import logging
import random

import numpy as np
import pytest

from medr3_jax.rewards.graph import (
    GraphReward,
    cosine,
    entity_jaccard,
    graph_score,
    multihop_paths,
    path_jaccard,
    reference_score,
)
from medr3_jax.data.references import Reference
from medr3_jax.rewards.judge import JudgeStats, graph_prompt, parse_graph
from tests import authors_reference as ref

# Think graph T: insulin -lowers-> glucose -causes-> polyuria.
# Reference R: insulin -lowers-> glucose, insulin -treats-> diabetes.
T = [["insulin", "lowers", "glucose", False], ["glucose", "causes", "polyuria", False]]
R = [["insulin", "lowers", "glucose", False], ["insulin", "treats", "diabetes", True]]


def test_multihop_paths_by_hand():
    assert multihop_paths(T) == {
        ("insulin", "lowers", "glucose"),
        ("insulin", "lowers", "glucose", "causes", "polyuria"),
    }  # only from the root: (glucose, causes, polyuria) alone is not a path
    assert multihop_paths(R) == {("insulin", "lowers", "glucose"), ("insulin", "treats", "diabetes")}
    # A branch: a path follows the first unused edge out of its end, and stops at a cycle.
    branch = [["a", "r", "b"], ["b", "s", "c"], ["b", "t", "d"], ["c", "u", "b"]]
    assert multihop_paths(branch) == {
        ("a", "r", "b"), ("a", "r", "b", "s", "c"), ("a", "r", "b", "s", "c", "u", "b"),
        ("a", "r", "b", "s", "c", "u", "b", "t", "d"),
    }  # fmt: skip
    assert multihop_paths([["x", "r", "y"], ["y", "r", "x"]]) == set()  # a cycle has no root
    assert multihop_paths([]) == set()


def test_scores_by_hand():
    # paths: T {ins-glu, ins-glu-pol}, R {ins-glu, ins-dia}: 1 shared of 3
    assert path_jaccard(T, R) == pytest.approx(1 / 3)
    # entities: {insulin, glucose, polyuria} vs {insulin, glucose, diabetes}: 2 of 4, exact strings
    assert entity_jaccard(T, R) == 0.5
    # "Insulin" != "insulin": {Insulin, glucose} vs {insulin, glucose, diabetes} share 1 of 4
    assert entity_jaccard([["Insulin", "lowers", "glucose"]], R) == 0.25
    assert cosine(np.array([1.0, 0.0]), np.array([-0.6, 0.8])) == pytest.approx(-0.6)  # unclipped
    assert cosine(np.zeros(2), np.ones(2)) == 0.0
    # (1/3 + 0.6 + 0.5) / 3
    assert reference_score(T, np.array([1.0, 0.0]), R, np.array([0.6, 0.8])) == pytest.approx((1 / 3 + 0.6 + 0.5) / 3)


def _random_graph(rng: random.Random, n: int) -> list[list]:
    names = ["insulin", "glucose", "polyuria", "diabetes", "pancreas", "beta cell", "ketones"]
    return [[rng.choice(names), rng.choice(["lowers", "causes", "treats"]), rng.choice(names), rng.random() < 0.5]
            for _ in range(n)]  # fmt: skip


@pytest.mark.parametrize("seed", range(40))
def test_scores_equal_the_authors_on_random_graphs(seed):
    rng = random.Random(seed)
    g1, g2 = _random_graph(rng, rng.randint(0, 8)), _random_graph(rng, rng.randint(1, 8))
    e1, e2 = np.array([rng.uniform(-1, 1) for _ in range(4)]), np.array([rng.uniform(-1, 1) for _ in range(4)])
    assert path_jaccard(g1, g2) == pytest.approx(ref.graph_logical_score(g1, g2))
    assert entity_jaccard(g1, g2) == pytest.approx(ref.graph_statistic_score(g1, g2))
    assert reference_score(g1, e1, g2, e2) == pytest.approx(ref.normalize_reasoning_reward(g1, e1, g2, e2))


def test_a_malformed_entry_zeroes_the_terms_it_breaks_as_theirs():
    broken = T + [["only two", "items"]]
    e = np.array([1.0, 0.0])
    assert reference_score(broken, e, R, e) == pytest.approx(ref.normalize_reasoning_reward(broken, e, R, e))
    assert reference_score(broken, e, R, e) == pytest.approx(1 / 3)  # the cosine alone


def test_graph_score_is_the_max_over_references():
    think, refs = np.array([1.0, 0.0]), np.array([[0.6, 0.8], [-1.0, 0.0]])
    assert graph_score(T, think, [R], refs[:1]) == pytest.approx((1 / 3 + 0.6 + 0.5) / 3)
    assert graph_score(T, think, [R, T], refs) == pytest.approx(max((1 / 3 + 0.6 + 0.5) / 3, (1 - 1 + 1) / 3))
    with pytest.raises(ValueError, match="no reference graphs"):
        graph_score(T, think, [], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="one row per reference"):
        graph_score(T, think, [R, R], np.ones((1, 2)))


def test_parse_graph_reads_as_their_read_json():
    fenced = 'Here:\n```json\n[["a", "r", "b", false]]\n``` and again ```json\n[["c", "s", "d", true]]\n```'
    assert parse_graph(fenced) == [["c", "s", "d", True]]  # the last block
    assert parse_graph('The graph is [["a", "r", "b", "False"]] done.') == [["a", "r", "b", "False"]]
    assert parse_graph('{"triples": [["a", "r", "b"]]}') == [["a", "r", "b"]]  # the outermost [...], as theirs
    assert parse_graph("no graph") is None and parse_graph("[1, 2]") is None  # entries must be arrays
    assert parse_graph('[["a", "r", "b"], oops]') is None


def test_graph_prompt_shows_the_reference_graphs():
    prompt = graph_prompt("Insulin lowers glucose.", [json.dumps(R), json.dumps(T)])
    assert prompt.startswith("You are a medical expert.\nGiven a reasoning process for solving a medical problem")
    assert "## Reasoning Process:\nInsulin lowers glucose.\n## Reference Knowledge Graphs:\n" in prompt
    assert f"{json.dumps(R)}\n{json.dumps(T)}\n\n## Please extract the knowledge graph" in prompt


class _CannedJudge:
    def __init__(self, replies):
        self.replies = replies
        self.prompts = []
        self.stats = JudgeStats()

    def complete(self, prompts):
        self.prompts.extend(prompts)
        return [self.replies[p.split("## Reasoning Process:\n")[1].split("\n")[0]] for p in prompts]


VECTORS = {"think one": [1.0, 0.0], "think two": [0.0, 1.0], "": [0.0, 1.0], "ref text": [0.6, 0.8]}


def _embed(texts):
    assert len(texts) == len(set(texts)), "each distinct text is embedded once"
    return np.array([VECTORS[t] for t in texts])


def test_graph_reward_scores_each_item():
    judge = _CannedJudge({"think one": "```json\n" + json.dumps(T) + "\n```", "think two": "I cannot do that.", "": "[]"})
    reference = Reference("medqa", "q", "<think>ref text</think><answer>x</answer>", tuple(tuple(e) for e in R))
    reward = GraphReward(judge, _embed)
    scores = reward(["think one", "think two", "no refs", ""], [[reference], [reference], [], [reference]])
    # item 0: (1/3 + 0.6 + 0.5) / 3; item 1: unreadable reply, an empty graph: (0 + cos 0.8 + 0) / 3;
    # item 2: no reference (no request); item 3: an empty think text, asked as theirs: [] -> (0 + 0.8 + 0) / 3.
    assert scores[0] == pytest.approx((1 / 3 + 0.6 + 0.5) / 3)
    assert scores[1] == pytest.approx(0.8 / 3) and scores[2] is None and scores[3] == pytest.approx(0.8 / 3)
    assert len(judge.prompts) == 3 and judge.stats.bad_replies == 1
    assert reference.as_json() in judge.prompts[0]  # the judge sees the reference graph


def test_graph_reward_disabled_warns_once(caplog):
    reference = Reference("medqa", "q", "<think>ref text</think><answer>x</answer>", tuple(tuple(e) for e in R))
    with caplog.at_level(logging.WARNING, logger="medr3_jax.rewards.graph"):
        no_judge = GraphReward(None, _embed)
        assert no_judge(["think one"], [[reference]]) is None
        assert no_judge(["think two"], [[reference]]) is None
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


def test_graph_reward_uses_a_stored_vector_only_from_its_own_encoder():
    judge = _CannedJudge({"think one": "```json\n" + json.dumps(T) + "\n```"})
    chain = "<think>ref text</think><answer>x</answer>"
    same = Reference("medqa", "q", chain, tuple(tuple(e) for e in R), vector=(0.0, 1.0), encoder="enc-a")
    other = Reference("medqa", "q", chain, tuple(tuple(e) for e in R), vector=(0.0, 1.0), encoder="enc-b")
    embedded = []
    embed = lambda texts: (embedded.extend(texts), _embed(texts))[1]  # noqa: E731
    (stored,) = GraphReward(judge, embed, embed_id="enc-a")(["think one"], [[same]])
    assert embedded == ["think one"]  # the reference's text is not embedded: its vector is used
    assert stored == pytest.approx((1 / 3 + 0.0 + 0.5) / 3)  # cos((1, 0), stored (0, 1)) = 0
    embedded.clear()
    (fresh,) = GraphReward(judge, embed, embed_id="enc-a")(["think one"], [[other]])
    assert embedded == ["think one", "ref text"] and fresh == pytest.approx((1 / 3 + 0.6 + 0.5) / 3)
