"""The engine over every retrieval backend of the real sample index (a scripted policy speaking
SmolLM2 tokens), and the audit dump a person reads."""

import json

import numpy as np
import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.models.config import preset
from medr3_jax.protocol import MED_R3, STOP_STRINGS
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.rewards import Scored
from medr3_jax.rollout import RolloutConfig, RolloutEngine
from medr3_jax.rollout.audit import provenance_runs, write_audit
from medr3_jax.sampling import GREEDY, Sampler
from tests.sampling.fakes import ScriptedLM

QUERY = "first-line anticoagulation for atrial fibrillation"


@pytest.fixture(scope="module")
def scripted(smollm2_tokenizer):
    """(tokenizer, prompt ids, first turn ids, final turn ids) for one row that searches inside its
    think block (the default med_r3 protocol)."""
    tok = smollm2_tokenizer
    prompt = tok.encode("Question: how is stroke prevented in atrial fibrillation?\n<think>")
    turn1 = tok.encode(f"I should check.<search> {QUERY} </search>")
    final = tok.encode("Anticoagulate.</think><answer>A</answer>") + [tok.eos_id]
    return tok, prompt, turn1, final


@pytest.mark.parametrize("backend", ["exact", "scann", "bm25", "fusion"])
def test_rollout_on_each_backend(backend, sample_index_dir, scripted, tmp_path):
    tok, prompt, turn1, final = scripted
    retriever = Retriever(sample_index_dir, backend=backend)
    ids, _ = retriever.search([QUERY], k=2)
    doc = MED_R3.document_blocks(tok.encode).passages(retriever.passage_tokens(ids[0]))
    row = prompt + turn1 + doc + final
    script = np.full((1, len(row) + 8), tok.eos_id, np.int32)
    script[0, : len(row)] = row
    model = ScriptedLM(script, preset("tiny").replace(vocab_size=tok.vocab_size))
    config = RolloutConfig(group_size=1, top_k=2, max_response_tokens=1024, decode_segment=32)
    rollout = RolloutEngine(Sampler(model, tok, stop_strings=STOP_STRINGS), retriever, config).run(
        [prompt], params=GREEDY
    )
    n = len(row)
    assert rollout.tokens[0, :n].tolist() == row and rollout.retrieved_ids[0] == ids[0]
    assert rollout.queries[0] == [QUERY] and rollout.flags[0] == frozenset()
    assert (
        provenance_runs(rollout.provenance[0])
        == f"prompt:{len(prompt)} sampled:{len(turn1)} document:{len(doc)} sampled:{len(final)}"
    )

    record = QARecord(id="af-1", dataset="sample", question="how is stroke prevented?", options={"A": "DOAC", "B": "none"},
                      answer="A", answer_text="DOAC")  # fmt: skip
    scored = Scored(totals=np.array([1.25]), components={"answer": np.array([1.0]), "evidence": np.array([np.nan])},
                    format_ok=np.array([True]), answer_reasons=["rule: matches the gold option"], metrics={})  # fmt: skip
    path = write_audit(str(tmp_path / "step_000007.jsonl"), 7, rollout, [record], scored,
                       questions=["How is stroke prevented?"], passage_title=lambda pid: retriever.passage(pid).title)  # fmt: skip
    (line,) = [json.loads(x) for x in open(path, encoding="utf-8")]
    assert line["step"] == 7 and line["question_id"] == "af-1" and line["reward"] == 1.25
    assert line["components"] == {"answer": 1.0, "evidence": None}
    assert line["question"] == "How is stroke prevented?" and line["options"] == {"A": "DOAC", "B": "none"}
    assert line["gold"] == "A" and line["answer"] == "DOAC"
    assert line["format_ok"] is True and line["answer_reason"] == "rule: matches the gold option"
    assert line["bad_search"] is False and line["response_tokens"] == len(turn1) + len(doc) + len(final)
    assert line["prefix"] == "<think>" and MED_R3.format_score(line["prefix"] + line["text"], retrieval=True) == 1.0
    assert [r["id"] for r in line["retrieved"]] == ids[0]
    assert line["retrieved"][0]["title"] == retriever.passage(ids[0][0]).title
    assert line["stop"] == "EOS" and "<document>" in line["text"] and line["queries"] == [QUERY]


def test_audit_without_shown_questions_reads_the_records(scripted, sample_index_dir, tmp_path):
    """`questions` left out: the line holds the record's own question; a malformed search shows
    in `flags` and `bad_search`."""
    tok, prompt, _, _ = scripted
    bad = tok.encode("I should check.<search> </search>")  # an empty query: a bad search
    script = np.full((1, len(prompt) + len(bad) + 8), tok.eos_id, np.int32)
    script[0, : len(prompt) + len(bad)] = prompt + bad
    model = ScriptedLM(script, preset("tiny").replace(vocab_size=tok.vocab_size))
    config = RolloutConfig(group_size=1, top_k=2, max_response_tokens=64, decode_segment=32)
    retriever = Retriever(sample_index_dir, backend="bm25")
    rollout = RolloutEngine(Sampler(model, tok, stop_strings=STOP_STRINGS), retriever, config).run(
        [prompt], params=GREEDY
    )
    record = QARecord(id="af-2", dataset="sample", question="how is stroke prevented?", answer_text="anticoagulation")
    scored = Scored(totals=np.array([-0.1]), components={"answer": np.array([np.nan])}, format_ok=np.array([False]),
                    answer_reasons=["bad search"], metrics={})  # fmt: skip
    (line,) = [json.loads(x) for x in open(write_audit(str(tmp_path / "a.jsonl"), 0, rollout, [record], scored))]
    assert line["question"] == "how is stroke prevented?" and line["options"] == {}
    assert line["gold"] == "anticoagulation" and line["answer"] == "anticoagulation"
    assert line["flags"] == ["bad_search"] and line["bad_search"] is True and line["format_ok"] is False
    assert line["reward"] == -0.1 and line["retrieved"] == [] and line["queries"] == []
    assert line["response_tokens"] == len(bad) and line["prefix"] == "<think>"
