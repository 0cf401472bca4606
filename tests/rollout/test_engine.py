"""The rollout engine with a scripted policy (a deterministic token emitter in place of the
model) and a fake retriever: exact trajectories, masks, search counts, inserted documents in
each protocol's layout, and the malformed, capped and failing cases."""

import time

import numpy as np
import pytest

from medr3_jax import protocol as P
from medr3_jax.protocol import MED_R3, SEARCH_R1, STOP_STRINGS, Protocol
from medr3_jax.rollout import DOCUMENT, PAD, PROMPT, SAMPLED, RolloutConfig, RolloutEngine
from medr3_jax.rollout.engine import RETRIEVAL_FAULTS, RetrievalHung
from medr3_jax.sampling import GREEDY, Sampler, StopReason
from tests.sampling.fakes import EOS, ScriptedLM, byte_tokenizer

TOK = byte_tokenizer()


class FakeRetriever:
    """ids '<query>#<i>'; each passage's tokens are the bytes of '[<id>]'. Faults: `fail` raised,
    `delay` seconds (`delays`: per call), or a reply of the wrong shape (`fault`: "rows" drops a
    result row, "wide" gives k + 1 ids, "ints" int ids, "tokens" one token list too few)."""

    def __init__(self, fail: Exception | None = None, delay: float = 0.0, fault: str = "", delays=()):
        self.fail, self.delay, self.fault, self.delays, self.calls = fail, delay, fault, list(delays), []

    def search(self, queries, k):
        self.calls.append(list(queries))
        time.sleep(self.delays[len(self.calls) - 1] if self.delays else self.delay)
        if self.fail:
            raise self.fail
        ids = [[f"{q}#{i}" for i in range(k + (self.fault == "wide"))] for q in queries]
        if self.fault == "rows":
            ids = ids[:-1]
        if self.fault == "ints":
            ids = [list(range(k)) for _ in queries]
        return ids, np.zeros((len(queries), k))

    def passage_tokens(self, ids):
        return [TOK.encode(f"[{i}]") for i in ids][: len(ids) - (self.fault == "tokens")]


def docs(query: str, k: int, protocol: Protocol = MED_R3) -> list[int]:
    return protocol.document_blocks(TOK.encode).passages([TOK.encode(f"[{query}#{i}]") for i in range(k)])


def trajectory(parts: list, k: int, protocol: Protocol = MED_R3) -> tuple[list[int], list[int]]:
    """Expected response ids and provenance: parts are sampled text ("\\0" is EOS), ('doc', query)
    or ('failed',)."""
    ids, prov = [], []
    for part in parts:
        if isinstance(part, tuple):
            block = docs(part[1], k, protocol) if part[0] == "doc" else protocol.document_blocks(TOK.encode).failed()
            ids, prov = ids + block, prov + [DOCUMENT] * len(block)
        else:
            new = [EOS if ch == "\0" else t for ch, t in zip(part, TOK.encode(part.replace("\0", "x")))]
            ids, prov = ids + new, prov + [SAMPLED] * len(new)
    return ids, prov


def run(prompts: list[str], scripts: list[list], config: RolloutConfig, retriever=None, *,
        protocol: Protocol = MED_R3, stop_strings: tuple[str, ...] | None = None):  # fmt: skip
    """Each row's script: the prompt, then its expected response; the model emits it by position.
    The sampler stops on `stop_strings`, by default the protocol's for `config.retrieval`."""
    expected = [trajectory(s, config.top_k, protocol) for s in scripts]
    width = max(len(TOK.encode(p)) + len(e[0]) for p, e in zip(prompts, expected)) + 8
    script = np.full((len(prompts), width), ord("x"), np.int32)
    for b, (p, (ids, _)) in enumerate(zip(prompts, expected)):
        row = TOK.encode(p) + ids
        script[b, : len(row)] = row
    if stop_strings is None:
        stop_strings = protocol.stop_strings(retrieval=config.retrieval)
    sampler = Sampler(ScriptedLM(script), TOK, stop_strings=stop_strings, max_new_tokens=config.max_response_tokens)
    engine = RolloutEngine(sampler, retriever if retriever is not None else FakeRetriever(), config, protocol)
    return engine.run([TOK.encode(p) for p in prompts], params=GREEDY), expected


CONFIG = RolloutConfig(
    group_size=1, max_searches=2, top_k=2, max_response_tokens=400, decode_segment=16, sequence_bucket=64
)

# Per protocol: the scripts of test_trajectories_masks_and_documents_are_exact (med_r3 searches
# inside its one think block; search_r1 closes it, searches, and opens a new one) and row 0's
# exact response text, documents in that protocol's layout.
SCRIPTS = {
    "med_r3": [
        ["a<search> insulin </search>", ("doc", "insulin"), "b<search>beta</search>", ("doc", "beta"),
         "c</think><answer>B</answer>\0"],  # two searches, then an answer
        ["plain</think><answer>A</answer>\0"],  # no search
        ["x<search>  </search>"],  # empty query
        ["x<search>a<search>b</search>"],  # two <search> in one turn
        ["I will paste <document>"],  # the policy writes a document tag itself
    ],
    "search_r1": [
        ["a</think><search> insulin </search>", ("doc", "insulin"), "<think>b</think><search>beta</search>",
         ("doc", "beta"), "<think>c</think><answer>B</answer>\0"],
        ["plain</think><answer>A</answer>\0"],
        ["x</think><search>  </search>"],
        ["x</think><search>a<search>b</search>"],
        ["I will paste <document>"],
    ],
}  # fmt: skip
TEXT_0 = {
    "med_r3": "a<search> insulin </search><document>[insulin#0]</document><document>[insulin#1]</document>"
    "b<search>beta</search><document>[beta#0]</document><document>[beta#1]</document>c</think><answer>B</answer>",
    "search_r1": "a</think><search> insulin </search>\n<document>[insulin#0]</document>\n<document>[insulin#1]</document>\n"
    "<think>b</think><search>beta</search>\n<document>[beta#0]</document>\n<document>[beta#1]</document>\n"
    "<think>c</think><answer>B</answer>",
}


@pytest.mark.parametrize("protocol", [MED_R3, SEARCH_R1], ids=lambda p: p.name)
def test_trajectories_masks_and_documents_are_exact(protocol):
    prompts = ["Q1 <think>", "Question two? <think>", "Q3 <think>", "Q4 <think>", "Q5 <think>"]
    rollout, expected = run(prompts, SCRIPTS[protocol.name], CONFIG, protocol=protocol)
    for b, (p, (ids, prov)) in enumerate(zip(prompts, expected)):
        n_prompt = len(TOK.encode(p))
        assert rollout.prompt_lengths[b] == n_prompt and rollout.response_lengths[b] == len(ids)
        assert rollout.tokens[b, : n_prompt + len(ids)].tolist() == TOK.encode(p) + ids
        assert rollout.provenance[b].tolist() == [PROMPT] * n_prompt + prov + [PAD] * (
            rollout.tokens.shape[1] - n_prompt - len(ids)
        )
        assert rollout.loss_mask[b].tolist() == [x == SAMPLED for x in rollout.provenance[b]]
        assert np.all(rollout.logprobs[b][~rollout.loss_mask[b]] == 0)
        assert rollout.positions[b, : n_prompt + len(ids)].tolist() == list(range(n_prompt + len(ids)))
    assert rollout.tokens.shape[1] % 64 == 0
    assert rollout.search_counts.tolist() == [2, 0, 0, 0, 0]
    assert rollout.queries[0] == ["insulin", "beta"]
    assert rollout.retrieved_ids[0] == ["insulin#0", "insulin#1", "beta#0", "beta#1"]
    assert [set(f) for f in rollout.flags] == [
        set(),
        set(),
        {P.FLAG_BAD_SEARCH},
        {P.FLAG_BAD_SEARCH},
        {P.FLAG_WROTE_DOCUMENT},
    ]
    assert rollout.stop_reasons.tolist()[:2] == [StopReason.EOS, StopReason.EOS]
    assert rollout.prefixes == ["<think>"] * len(prompts)
    assert rollout.texts[1] == "plain</think><answer>A</answer>"
    assert rollout.texts[0] == TEXT_0[protocol.name]
    # what the engine wrote is well formed under the protocol it ran (the rewards read prefix + text)
    assert protocol.format_score(rollout.prefixes[0] + rollout.texts[0], retrieval=True) == 1.0


def test_med_r3_serves_a_search_inside_the_think_block():
    """The authors' layout: the search is written inside the think block the prompt opened, the
    passages come back as <document> blocks right after </search>, no newlines around them. A
    prompt that prefills the start of the search turn has its prefix read with the first turn."""
    prompts = ["Q <think>", "Q <think>I check <search>"]
    scripts = [["a<search> insulin </search>", ("doc", "insulin"), "b</think><answer>B</answer>\0"],
               [" insulin </search>", ("doc", "insulin"), "b</think><answer>B</answer>\0"]]  # fmt: skip
    rollout, expected = run(prompts, scripts, CONFIG, protocol=MED_R3)
    for b, (ids, prov) in enumerate(expected):
        n_prompt = rollout.prompt_lengths[b]
        assert rollout.tokens[b, n_prompt : n_prompt + len(ids)].tolist() == ids
        assert rollout.provenance[b, n_prompt : n_prompt + len(ids)].tolist() == prov
    passages = "<document>[insulin#0]</document><document>[insulin#1]</document>"
    assert rollout.texts[0] == f"a<search> insulin </search>{passages}b</think><answer>B</answer>"
    assert rollout.texts[1] == f" insulin </search>{passages}b</think><answer>B</answer>"
    assert rollout.prefixes == ["<think>", "<think>I check <search>"]
    assert rollout.queries == [["insulin"], ["insulin"]] and rollout.search_counts.tolist() == [1, 1]
    assert rollout.flags == [frozenset(), frozenset()]
    assert rollout.stop_reasons.tolist() == [StopReason.EOS, StopReason.EOS]
    assert [MED_R3.format_score(p + t, retrieval=True) for p, t in zip(rollout.prefixes, rollout.texts)] == [1.0, 1.0]


def test_search_cap_and_response_cap():
    capped = ["<search>q1</search>", ("doc", "q1"), "<search>q2</search>", ("doc", "q2"),
              "<search>q3</search>"]  # a third search over max_searches=2  # fmt: skip
    rollout, _ = run(["P <think>"], [capped], CONFIG)
    assert rollout.search_counts[0] == 2 and rollout.flags[0] == {P.FLAG_SEARCH_CAP}
    end = rollout.prompt_lengths[0] + rollout.response_lengths[0]
    assert rollout.tokens[0, :end].tolist()[-len("<search>q3</search>") :] == TOK.encode("<search>q3</search>")
    assert rollout.texts[0].count("<document>") == 4  # 2 searches x top_k=2, nothing for the third

    # 79 sampled tokens + 2 passages (58 tokens) would cross the 90-token response cap
    config = RolloutConfig(
        group_size=1, max_searches=2, top_k=2, max_response_tokens=90, decode_segment=16, sequence_bucket=64
    )
    rollout, _ = run(["P <think>"], [["y" * 58 + "<search>long</search>"]], config)
    assert rollout.search_counts[0] == 0 and rollout.flags[0] == {P.FLAG_RESPONSE_CAP}
    assert len(docs("long", 2)) + rollout.response_lengths[0] >= 90


def test_length_cap_counts_inserted_documents():
    # 18 sampled + 26 document tokens + 56 more sampled reach the 100-token cap: the row stops at 100
    scripts = [["<search>q</search>", ("doc", "q"), "z" * 200]]
    config = RolloutConfig(
        group_size=1, max_searches=2, top_k=1, max_response_tokens=100, decode_segment=16, sequence_bucket=64
    )
    rollout, _ = run(["P <think>"], scripts, config)
    assert rollout.response_lengths[0] == 100 and rollout.flags[0] == {P.FLAG_LENGTH}
    assert rollout.stop_reasons[0] == StopReason.LENGTH
    assert rollout.search_counts[0] == 1 and (rollout.provenance[0] == DOCUMENT).sum() == len(docs("q", 1))


FAULTS = {
    "raises": (lambda: FakeRetriever(fail=RuntimeError("index offline")), "retrieval_errors"),
    "hangs": (lambda: FakeRetriever(delay=0.5), "retrieval_timeouts"),
    "too_few_rows": (lambda: FakeRetriever(fault="rows"), "retrieval_bad_replies"),
    "too_many_ids": (lambda: FakeRetriever(fault="wide"), "retrieval_bad_replies"),
    "int_ids": (lambda: FakeRetriever(fault="ints"), "retrieval_bad_replies"),
    "too_few_token_lists": (lambda: FakeRetriever(fault="tokens"), "retrieval_bad_replies"),
}


@pytest.mark.parametrize("protocol", [MED_R3, SEARCH_R1], ids=lambda p: p.name)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_failed_or_slow_retrieval_inserts_the_notice(fault, protocol):
    """Every retriever fault (an exception, a hang past the timeout, a reply of the wrong shape)
    gives the row the failure notice, is counted by kind, and the row goes on to its answer."""
    make, kind = FAULTS[fault]
    retriever = make()
    config = RolloutConfig(group_size=1, max_searches=2, top_k=2, max_response_tokens=400, decode_segment=16,
                           sequence_bucket=64, retrieval_timeout_s=0.1)  # fmt: skip
    scripts = [["<search>q</search>", ("failed",), "ok</think><answer>A</answer>\0"]]
    rollout, expected = run(["P <think>"], scripts, config, retriever, protocol=protocol)
    ids, _ = expected[0]
    assert rollout.tokens[0, rollout.prompt_lengths[0] : rollout.prompt_lengths[0] + len(ids)].tolist() == ids
    notice = {"med_r3": "<document>search failed, no document found</document>",
              "search_r1": "\n<document>search failed, no document found</document>\n"}[protocol.name]  # fmt: skip
    assert rollout.texts[0] == f"<search>q</search>{notice}ok</think><answer>A</answer>"
    assert rollout.stats["retrieval_failures"] == 1 and rollout.flags[0] == {P.FLAG_RETRIEVAL_FAILED}
    assert rollout.search_counts[0] == 1 and rollout.stop_reasons[0] == StopReason.EOS
    assert {k: rollout.stats[k] for k in RETRIEVAL_FAULTS} == {k: float(k == kind) for k in RETRIEVAL_FAULTS}
    assert rollout.metrics()[kind.replace("retrieval_", "retrieval/")] == 1.0


def test_a_hung_search_does_not_hold_up_the_next_one():
    """The first search hangs for 3 s (past the 0.2-s timeout): it gets the notice, and the
    row's second search, a segment later, is answered at once instead of queueing behind it."""
    retriever = FakeRetriever(delays=[3.0, 0.0])
    config = RolloutConfig(group_size=1, max_searches=2, top_k=1, max_response_tokens=400, decode_segment=16,
                           sequence_bucket=64, retrieval_timeout_s=0.2)  # fmt: skip
    scripts = [["<search>q</search>", ("failed",), "<search>r</search>", ("doc", "r"), "</think><answer>A</answer>\0"]]
    start = time.perf_counter()
    rollout, expected = run(["P <think>"], scripts, config, retriever)
    assert time.perf_counter() - start < 2.5 and len(retriever.calls) == 2
    ids, _ = expected[0]
    assert rollout.tokens[0, rollout.prompt_lengths[0] : rollout.prompt_lengths[0] + len(ids)].tolist() == ids
    assert rollout.stats["retrieval_timeouts"] == 1 and rollout.stats["retrieval_failures"] == 1
    assert rollout.retrieved_ids[0] == ["r#0"]


class SharedFakeRetriever(FakeRetriever):
    """A FakeRetriever whose ranking is shared by every process (`collective`): `prepare` (this
    host alone) raises or sleeps for `prepare_fault`, `rank` (all hosts together) for `rank_fault`."""

    collective = True

    def __init__(self, prepare_fault=None, rank_fault=None):
        super().__init__()
        self.prepare_fault, self.rank_fault, self.stages = prepare_fault, rank_fault, []

    def prepare(self, queries):
        self.stages.append("prepare")
        self._fault(self.prepare_fault)
        return list(queries)

    def rank(self, prepared, k):
        self.stages.append("rank")
        self._fault(self.rank_fault)
        return self.search(prepared, k)

    @staticmethod
    def _fault(fault):
        if isinstance(fault, Exception):
            raise fault
        if fault:
            time.sleep(fault)


@pytest.mark.parametrize("case", ["prepare_raises", "prepare_hangs", "rank_raises"])
def test_a_shared_ranking_is_entered_only_after_every_host_prepared(case):
    """A collective retriever: a fault while preparing (this host's encoder) gives the notice
    without entering the ranking; a ranking that raises after it gives the notice too."""
    retriever = {"prepare_raises": SharedFakeRetriever(prepare_fault=RuntimeError("encoder")),
                 "prepare_hangs": SharedFakeRetriever(prepare_fault=1.0),
                 "rank_raises": SharedFakeRetriever(rank_fault=RuntimeError("merge"))}[case]  # fmt: skip
    config = RolloutConfig(group_size=1, max_searches=1, top_k=1, max_response_tokens=200, decode_segment=16,
                           sequence_bucket=64, retrieval_timeout_s=0.2)  # fmt: skip
    scripts = [["<search>q</search>", ("failed",), "</think><answer>A</answer>\0"]]
    rollout, expected = run(["P <think>"], scripts, config, retriever)
    assert rollout.tokens[0, rollout.prompt_lengths[0] :][: len(expected[0][0])].tolist() == expected[0][0]
    assert retriever.stages == (["prepare", "rank"] if case == "rank_raises" else ["prepare"])
    kind = "retrieval_timeouts" if case == "prepare_hangs" else "retrieval_errors"
    assert {k: rollout.stats[k] for k in RETRIEVAL_FAULTS} == {k: float(k == kind) for k in RETRIEVAL_FAULTS}


def test_a_shared_ranking_that_hangs_stops_the_run():
    """Every host entered the ranking: one cannot abandon it, so a hang past the timeout raises."""
    config = RolloutConfig(group_size=1, max_searches=1, top_k=1, max_response_tokens=200, decode_segment=16,
                           sequence_bucket=64, retrieval_timeout_s=0.2)  # fmt: skip
    with pytest.raises(RetrievalHung, match="retrieval_timeout_s=0.2"):
        run(["P <think>"], [["<search>q</search>", ("failed",), "</think><answer>A</answer>\0"]], config,
            SharedFakeRetriever(rank_fault=1.0))  # fmt: skip


def test_groups_share_prompts_and_searches_are_batched():
    retriever = FakeRetriever()
    prompts = ["Qa <think>", "Qb <think>"]
    scripts = [["<search>a</search>", ("doc", "a"), "</think><answer>A</answer>\0"],
               ["<search>b</search>", ("doc", "b"), "</think><answer>B</answer>\0"]]  # fmt: skip
    config = RolloutConfig(
        group_size=1, max_searches=1, top_k=1, max_response_tokens=200, decode_segment=64, sequence_bucket=64
    )
    rollout, _ = run(prompts, scripts, config, retriever)
    assert retriever.calls == [["a", "b"]]  # both rows searched in one segment: one retriever call
    assert rollout.group_ids.tolist() == [0, 1]
    assert 0 <= rollout.stats["retrieval_wait_share"] <= rollout.stats["idle_share"] < 1


def test_retrieval_off_needs_no_stop_strings_and_a_search_simply_continues():
    config = RolloutConfig(
        group_size=1, retrieval=False, max_response_tokens=100, decode_segment=16, sequence_bucket=64
    )
    assert MED_R3.stop_strings(retrieval=False) == () and SEARCH_R1.stop_strings(retrieval=False) == ()
    # The protocol's sampler for a rollout without retrieval has no stop strings: `</search>` is
    # just text, the row runs on to its end of text, nothing is served and nothing flagged.
    text = "x<search>q</search>y</think><answer>A</answer>"
    rollout, expected = run(["P <think>"], [[text + "\0"]], config, retriever=None, stop_strings=())
    assert rollout.texts[0] == text and rollout.response_lengths[0] == len(expected[0][0])
    assert rollout.flags[0] == frozenset() and rollout.search_counts[0] == 0
    assert rollout.stop_reasons[0] == StopReason.EOS and (rollout.provenance[0] != DOCUMENT).all()
    # A sampler that does stop on the tags still gets no retrieval: the search is a bad one.
    rollout, _ = run(["P <think>"], [["x<search>q</search>"]], config, retriever=None, stop_strings=STOP_STRINGS)
    assert rollout.flags[0] == {P.FLAG_BAD_SEARCH} and rollout.search_counts[0] == 0


def test_a_searching_rollout_needs_a_sampler_that_stops_on_the_tags():
    lm = ScriptedLM(np.zeros((1, 8), np.int32))
    with pytest.raises(ValueError, match="must stop on"):
        RolloutEngine(Sampler(lm, TOK), FakeRetriever(), CONFIG)
    with pytest.raises(ValueError, match="must stop on"):
        RolloutEngine(Sampler(lm, TOK, stop_strings=("</search>",)), FakeRetriever(), CONFIG, SEARCH_R1)
    RolloutEngine(Sampler(lm, TOK), None, RolloutConfig(retrieval=False))  # no retrieval: none needed
    with pytest.raises(ValueError, match="needs a retriever"):
        RolloutEngine(Sampler(lm, TOK, stop_strings=STOP_STRINGS), None, CONFIG)


def test_parse_search_turn():
    assert P.parse_search_turn("think</think>\n<search>  ACE inhibitor cough </search>") == "ACE inhibitor cough"
    assert P.parse_search_turn("I recall <search> insulin </search>") == "insulin"  # med_r3: inside the think block
    assert P.parse_search_turn("<search>q</search>\n") == "q"  # a piece of the last token after the tag
    for bad, why in [("<search></search>", "empty query"), ("no tags </search>", "0 <search>"),
                     ("<search>a<search>b</search>", "2 <search>"), ("<search>a</search> <search>b</search>", "2 <search>")]:  # fmt: skip
        with pytest.raises(P.MalformedSearch, match=why):
            P.parse_search_turn(bad)
