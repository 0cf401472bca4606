"""The engine over every retrieval backend of the real sample index (a scripted policy speaking
SmolLM2 tokens), and the audit dump a person reads."""

import json

import numpy as np
import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.models.config import preset
from medr3_jax.models.tokenizers import STOP_STRINGS
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.rollout import DocumentBlocks, RolloutConfig, RolloutEngine
from medr3_jax.rollout.audit import provenance_runs, write_audit
from medr3_jax.sampling import GREEDY, Sampler
from tests.sampling.fakes import ScriptedLM

QUERY = "first-line anticoagulation for atrial fibrillation"


@pytest.fixture(scope="module")
def scripted(smollm2_tokenizer):
    """(prompt ids, expected response ids given the documents, config) for one searching row."""
    tok = smollm2_tokenizer
    prompt = tok.encode("Question: how is stroke prevented in atrial fibrillation?\n<think>")
    turn1 = tok.encode(f"I should check.</think>\n<search> {QUERY} </search>")
    final = tok.encode("<think>Anticoagulate.</think>\n<answer>A</answer>") + [tok.eos_id]
    return tok, prompt, turn1, final


@pytest.mark.parametrize("backend", ["exact", "scann", "bm25", "fusion"])
def test_rollout_on_each_backend(backend, sample_index_dir, scripted, tmp_path):
    tok, prompt, turn1, final = scripted
    retriever = Retriever(sample_index_dir, backend=backend)
    ids, _ = retriever.search([QUERY], k=2)
    doc = DocumentBlocks.for_tokenizer(tok).passages(retriever.passage_tokens(ids[0]))
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
    path = write_audit(str(tmp_path / "step_000007.jsonl"), 7, rollout, [record], np.array([1.25]),
                       {"answer": np.array([1.0]), "evidence": np.array([np.nan])},
                       passage_title=lambda pid: retriever.passage(pid).title)  # fmt: skip
    (line,) = [json.loads(x) for x in open(path, encoding="utf-8")]
    assert line["step"] == 7 and line["question_id"] == "af-1" and line["reward"] == 1.25
    assert line["components"] == {"answer": 1.0, "evidence": None}
    assert [r["id"] for r in line["retrieved"]] == ids[0]
    assert line["retrieved"][0]["title"] == retriever.passage(ids[0][0]).title
    assert line["stop"] == "EOS" and "<document>" in line["text"] and line["queries"] == [QUERY]
