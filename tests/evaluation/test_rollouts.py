"""evaluation.rollouts bookkeeping with a stand-in engine (a deterministic function of the prompt,
the seed and the sample that searches the real sample index): accuracies recomputed from the
predictions file, retrieved ids that exist in the index, a run cut mid-batch and resumed that
writes the bytes of a straight run, and a failing batch recorded and named."""

import json
import random
import types

import numpy as np
import pytest

from medr3_jax.data.datasets import load_records
from medr3_jax.data.prompts import PromptStyle
from medr3_jax.evaluation.report import summarize_split
from medr3_jax.evaluation.rollouts import EvalSettings, evaluate_records, grade_sample, read_predictions
from medr3_jax.protocol import MED_R3
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.rollout import RolloutConfig
from medr3_jax.sampling import StopReason
from tests.sampling.fakes import byte_tokenizer


class StandInEngine:
    """What `evaluate_records` needs of a RolloutEngine. Row j of prompt p searches (the
    question's first words) or not, and answers the gold text or a wrong option, as a seeded
    function of (prompt, seed, j)."""

    def __init__(self, records, retriever, samples, fail_on_seed=None):
        self.config = RolloutConfig(group_size=samples, max_searches=2, top_k=2)
        self.tokenizer, self.protocol, self.retriever = byte_tokenizer(), MED_R3, retriever
        self.records, self.fail_on_seed, self.seeds, self.batch_sizes = records, fail_on_seed, [], []

    def run(self, prompts, *, params, seed):
        self.seeds.append(seed)
        self.batch_sizes.append(len(prompts))
        if seed == self.fail_on_seed:
            raise RuntimeError("retriever timed out")
        rows = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            record = next(r for r in self.records if (r.open_question or r.question) in text)
            for j in range(self.config.group_size):
                rng = random.Random(f"{text}|{seed}|{j}|{params.temperature}")
                queries, found = [], []
                if rng.random() < 0.6:
                    queries = [" ".join((record.open_question or record.question).split()[:5])]
                    found = self.retriever.search(queries, 2)[0][0]
                wrong = [v for k, v in record.options.items() if k != record.answer]
                answer = record.options[record.answer] if rng.random() < 0.5 else wrong[0]
                docs = "".join(f"<search> {q} </search><document>{i}</document>" for q, i in zip(queries, found))
                rows.append((f"I think.{docs}</think><answer>{answer}</answer>", queries, found))
        n = len(rows)
        return types.SimpleNamespace(
            prefixes=["<think>"] * n, texts=[r[0] for r in rows], queries=[r[1] for r in rows],
            retrieved_ids=[r[2] for r in rows], loss_mask=np.ones((n, 7), bool), response_lengths=np.full(n, 9),
            stop_reasons=np.full(n, int(StopReason.EOS)), flags=[frozenset()] * n,
        )  # fmt: skip


@pytest.fixture(scope="module")
def setup(sample_data_dir, sample_index_dir):
    records = load_records("mirage", "mmlu", sample_data_dir)  # 9 questions: 5 batches of 2
    return records, Retriever(sample_index_dir, backend="bm25")


STYLE = PromptStyle(mode="search", chat=False, question_form="open")
SETTINGS = EvalSettings(samples=3, temperature=0.6, top_p=0.9, batch_size=2, seed=5)


def test_predictions_hold_what_the_table_says(setup, tmp_path):
    records, retriever = setup
    path = str(tmp_path / "predictions.jsonl")
    engine = StandInEngine(records, retriever, 3)
    out = evaluate_records(engine, records, STYLE, SETTINGS, predictions_path=path)
    assert engine.batch_sizes == [2] * 5  # 9 questions: the last batch is padded, its repeat's rows dropped
    on_disk = [row for row, _ in read_predictions(path).values()]
    assert on_disk == out and [p["id"] for p in out] == [r.id for r in records]
    valid = set(retriever.store.ids(range(len(retriever))))
    searched = 0
    for record, p in zip(records, on_disk):
        graded = [grade_sample(record, s["text"], MED_R3, letters_shown=False) for s in p["samples"]]
        assert [s["correct"] for s in p["samples"]] == [g[1] == 2 for g in graded]
        assert p["accuracy"] == pytest.approx(np.mean([s["correct"] for s in p["samples"]]))
        for s in p["samples"]:
            assert set(s["retrieved_ids"]) <= valid and bool(s["queries"]) == bool(s["retrieved_ids"])
            searched += bool(s["queries"])
    assert searched > 0
    row = summarize_split("mirage", "mmlu", on_disk)
    assert row["accuracy"] == pytest.approx(np.mean([p["accuracy"] for p in on_disk])) and row["n"] == len(records)
    assert 0 < row["accuracy"] < 1 and row["samples"] == 3 * len(records)


def test_a_run_cut_mid_batch_resumes_to_the_bytes_of_a_straight_run(setup, tmp_path):
    records, retriever = setup
    straight, cut = tmp_path / "straight.jsonl", tmp_path / "cut.jsonl"
    evaluate_records(StandInEngine(records, retriever, 3), records, STYLE, SETTINGS, predictions_path=str(straight))
    lines = straight.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:3]) + lines[3][:20])  # batch 1 whole, batch 2 one line and a half
    engine = StandInEngine(records, retriever, 3)
    evaluate_records(engine, records, STYLE, SETTINGS, predictions_path=str(cut))
    assert cut.read_bytes() == straight.read_bytes()
    assert engine.seeds == [5 + b for b in range(1, (len(records) + 1) // 2)]  # batch b keeps seed 5 + b
    again = StandInEngine(records, retriever, 3)
    evaluate_records(again, records, STYLE, SETTINGS, predictions_path=str(cut))
    assert again.seeds == [] and cut.read_bytes() == straight.read_bytes()  # all done: nothing rerun


def test_a_failing_batch_is_recorded_and_the_run_goes_on(setup, tmp_path):
    records, retriever = setup
    engine = StandInEngine(records, retriever, 3, fail_on_seed=6)  # batch 1
    out = evaluate_records(engine, records, STYLE, SETTINGS, predictions_path=str(tmp_path / "p.jsonl"))
    failed = [p for p in out if "error" in p]
    assert [p["id"] for p in failed] == [r.id for r in records[2:4]]
    assert failed[0]["error"] == "RuntimeError: retriever timed out" and len(out) == len(records)
    assert summarize_split("mirage", "mmlu", out)["failed"] == 2
    with pytest.raises(ValueError, match="greedy samples would be identical"):
        EvalSettings(samples=4, temperature=0.0)
    assert json.loads(open(tmp_path / "p.jsonl").readline())["id"] == records[0].id
