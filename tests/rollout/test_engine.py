"""The rollout engine with a scripted policy (a deterministic token emitter in place of the
model) and a fake retriever: exact trajectories, masks, search counts, inserted documents, and
the malformed, capped and failing cases."""

import time

import numpy as np
import pytest

from medr3_jax.models.tokenizers import STOP_STRINGS
from medr3_jax.rollout import DOCUMENT, PAD, PROMPT, SAMPLED, DocumentBlocks, RolloutConfig, RolloutEngine
from medr3_jax.rollout import protocol as P
from medr3_jax.sampling import GREEDY, Sampler, StopReason
from tests.sampling.fakes import EOS, ScriptedLM, byte_tokenizer

TOK = byte_tokenizer()
BLOCKS = DocumentBlocks.for_tokenizer(TOK)


class FakeRetriever:
    """ids '<query>#<i>'; each passage's tokens are the bytes of '[<id>]'."""

    def __init__(self, fail: Exception | None = None, delay: float = 0.0):
        self.fail, self.delay, self.calls = fail, delay, []

    def search(self, queries, k):
        self.calls.append(list(queries))
        time.sleep(self.delay)
        if self.fail:
            raise self.fail
        return [[f"{q}#{i}" for i in range(k)] for q in queries], np.zeros((len(queries), k))

    def passage_tokens(self, ids):
        return [TOK.encode(f"[{i}]") for i in ids]


def docs(query: str, k: int) -> list[int]:
    return BLOCKS.passages([TOK.encode(f"[{query}#{i}]") for i in range(k)])


def trajectory(prompt: str, parts: list, k: int) -> tuple[list[int], list[int]]:
    """Expected response ids and provenance: parts are sampled text or ('doc', query)."""
    ids, prov = [], []
    for part in parts:
        if isinstance(part, tuple):
            block = docs(part[1], k) if part[0] == "doc" else BLOCKS.failed()
            ids, prov = ids + block, prov + [DOCUMENT] * len(block)
        else:
            new = [EOS if ch == "\0" else t for ch, t in zip(part, TOK.encode(part.replace("\0", "x")))]
            ids, prov = ids + new, prov + [SAMPLED] * len(new)
    return ids, prov


def run(prompts: list[str], scripts: list[list], config: RolloutConfig, retriever=None):
    """Each row's script: the prompt, then its expected response; the model emits it by position."""
    expected = [trajectory(p, s, config.top_k) for p, s in zip(prompts, scripts)]
    width = max(len(TOK.encode(p)) + len(e[0]) for p, e in zip(prompts, expected)) + 8
    script = np.full((len(prompts), width), ord("x"), np.int32)
    for b, (p, (ids, _)) in enumerate(zip(prompts, expected)):
        row = TOK.encode(p) + ids
        script[b, : len(row)] = row
    sampler = Sampler(ScriptedLM(script), TOK, stop_strings=STOP_STRINGS, max_new_tokens=config.max_response_tokens)
    engine = RolloutEngine(sampler, retriever if retriever is not None else FakeRetriever(), config)
    return engine.run([TOK.encode(p) for p in prompts], params=GREEDY), expected


CONFIG = RolloutConfig(
    group_size=1, max_searches=2, top_k=2, max_response_tokens=400, decode_segment=16, sequence_bucket=64
)


def test_trajectories_masks_and_documents_are_exact():
    prompts = ["Q1 <think>", "Question two? <think>", "Q3 <think>", "Q4 <think>", "Q5 <think>"]
    scripts = [
        ["a</think><search> insulin </search>", ("doc", "insulin"), "<think>b</think><search>beta</search>",
         ("doc", "beta"), "<think>c</think><answer>B</answer>\0"],  # two searches, then an answer
        ["plain</think><answer>A</answer>\0"],  # no search
        ["x</think><search>  </search>"],  # empty query
        ["x</think><search>a<search>b</search>"],  # two <search> in one turn
        ["I will paste <document>"],  # the policy writes a document tag itself
    ]  # fmt: skip
    rollout, expected = run(prompts, scripts, CONFIG)
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
    assert rollout.texts[1] == "plain</think><answer>A</answer>"
    assert "<document>[insulin#0]</document>" in rollout.texts[0]


def test_search_cap_and_response_cap():
    capped = ["</think><search>q1</search>", ("doc", "q1"), "<think></think><search>q2</search>", ("doc", "q2"),
              "<think></think><search>q3</search>"]  # a third search over max_searches=2  # fmt: skip
    rollout, _ = run(["P <think>"], [capped], CONFIG)
    assert rollout.search_counts[0] == 2 and rollout.flags[0] == {P.FLAG_SEARCH_CAP}
    end = rollout.prompt_lengths[0] + rollout.response_lengths[0]
    assert rollout.tokens[0, :end].tolist()[-len("<search>q3</search>") :] == TOK.encode("<search>q3</search>")
    assert rollout.texts[0].count("<document>") == 4  # 2 searches x top_k=2, nothing for the third

    # 70 sampled tokens + 2 passages (about 40 tokens) would cross the 90-token response cap
    config = RolloutConfig(
        group_size=1, max_searches=2, top_k=2, max_response_tokens=90, decode_segment=16, sequence_bucket=64
    )
    rollout, _ = run(["P <think>"], [["</think>" + "y" * 50 + "<search>long</search>"]], config)
    assert rollout.search_counts[0] == 0 and rollout.flags[0] == {P.FLAG_RESPONSE_CAP}
    assert len(docs("long", 2)) + rollout.response_lengths[0] >= 90


def test_length_cap_counts_inserted_documents():
    # 20 sampled + documents + 40 more sampled would pass the 100-token cap: the row stops at 100
    scripts = [["</think><search>q</search>", ("doc", "q"), "z" * 200]]
    config = RolloutConfig(
        group_size=1, max_searches=2, top_k=1, max_response_tokens=100, decode_segment=16, sequence_bucket=64
    )
    rollout, _ = run(["P <think>"], scripts, config)
    assert rollout.response_lengths[0] == 100 and rollout.flags[0] == {P.FLAG_LENGTH}
    assert rollout.stop_reasons[0] == StopReason.LENGTH


@pytest.mark.parametrize("retriever", [FakeRetriever(fail=RuntimeError("index offline")), FakeRetriever(delay=0.5)])
def test_failed_or_slow_retrieval_inserts_the_notice(retriever):
    config = RolloutConfig(group_size=1, max_searches=2, top_k=2, max_response_tokens=400, decode_segment=16,
                           sequence_bucket=64, retrieval_timeout_s=0.1)  # fmt: skip
    scripts = [["</think><search>q</search>", ("failed",), "<think>ok</think><answer>A</answer>\0"]]
    rollout, expected = run(["P <think>"], scripts, config, retriever)
    ids, _ = expected[0]
    assert rollout.tokens[0, rollout.prompt_lengths[0] : rollout.prompt_lengths[0] + len(ids)].tolist() == ids
    assert "<document>search failed, no document found</document>" in rollout.texts[0]
    assert rollout.stats["retrieval_failures"] == 1 and rollout.flags[0] == {P.FLAG_RETRIEVAL_FAILED}
    assert rollout.search_counts[0] == 1 and rollout.stop_reasons[0] == StopReason.EOS


def test_groups_share_prompts_and_searches_are_batched():
    retriever = FakeRetriever()
    prompts = ["Qa <think>", "Qb <think>"]
    scripts = [["</think><search>a</search>", ("doc", "a"), "<answer>A</answer>\0"],
               ["</think><search>b</search>", ("doc", "b"), "<answer>B</answer>\0"]]  # fmt: skip
    config = RolloutConfig(
        group_size=1, max_searches=1, top_k=1, max_response_tokens=200, decode_segment=64, sequence_bucket=64
    )
    rollout, _ = run(prompts, scripts, config, retriever)
    assert retriever.calls == [["a", "b"]]  # both rows searched in one segment: one retriever call
    assert rollout.group_ids.tolist() == [0, 1]
    assert 0 <= rollout.stats["retrieval_wait_share"] <= rollout.stats["idle_share"] < 1


def test_retrieval_off_makes_a_search_bad_and_the_sampler_must_stop_on_the_tags():
    config = RolloutConfig(
        group_size=1, retrieval=False, max_response_tokens=100, decode_segment=16, sequence_bucket=64
    )
    rollout, _ = run(["P <think>"], [["</think><search>q</search>"]], config, retriever=None)
    assert rollout.flags[0] == {P.FLAG_BAD_SEARCH} and rollout.search_counts[0] == 0
    with pytest.raises(ValueError, match="must stop on"):
        RolloutEngine(Sampler(ScriptedLM(np.zeros((1, 8), np.int32)), TOK), None, config)


def test_parse_search_turn():
    assert P.parse_search_turn("think</think>\n<search>  ACE inhibitor cough </search>") == "ACE inhibitor cough"
    assert P.parse_search_turn("<search>q</search>\n") == "q"  # a piece of the last token after the tag
    for bad, why in [("<search></search>", "empty query"), ("no tags </search>", "0 <search>"),
                     ("<search>a<search>b</search>", "2 <search>"), ("<search>a</search> <search>b</search>", "2 <search>")]:  # fmt: skip
        with pytest.raises(P.MalformedSearch, match=why):
            P.parse_search_turn(bad)
