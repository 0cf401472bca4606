"""evaluate: grading of outputs by hand-worked cases, MIRAGE's std, and the batched predict loop
with a scripted policy (one compiled shape, the last batch padded)."""

import json
import math

import numpy as np
import pytest

from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord
from medr3_jax.evaluate import grade, predict
from medr3_jax.evaluation.report import average_row, summarize_split
from medr3_jax.evaluation.rollouts import grade_sample
from medr3_jax.protocol import MED_R3
from medr3_jax.rewards.answer import Grade
from tests.sampling.fakes import EOS, ScriptedLM, byte_tokenizer

MC = QARecord(id="7", dataset="medqa", question="Which organ makes insulin?",
              options={"A": "Liver", "B": "Pancreas", "C": "Spleen"}, answer="B", answer_text="Pancreas")  # fmt: skip
OPEN = QARecord(
    id="9", dataset="rarearena", question="Ataxia, low vitamin E.", answer_text="Ataxia with vitamin E deficiency"
)


@pytest.mark.parametrize(
    "output, answer, correct, readable",
    [
        ('{"step_by_step_thinking": "beta cells", "answer_choice": "B"}', "B", True, True),
        ('{"step_by_step_thinking": "x", "answer_choice": "C. Spleen"}', "C", False, True),
        ("The pancreas.", "A", False, False),  # MIRAGE's fallback letter, flagged unreadable
    ],
)
def test_mc_eval_grade(output, answer, correct, readable):
    p = grade(MC, output)
    assert (p.answer, p.correct, p.readable, p.gold) == (answer, correct, readable, "B")


@pytest.mark.parametrize(
    "text, letters_shown, answer, grade_, readable",
    [
        ("<think>beta cells</think><answer> B. Pancreas </answer>", True, "B. Pancreas", Grade.SAME, True),
        ("<think>x</think><answer>pancreas</answer>", False, "pancreas", Grade.SAME, True),
        ("<think>x</think><answer>B</answer>", False, "B", Grade.WRONG, True),  # letters were never shown
        ("<think>x</think><answer>the gut</answer>", True, "the gut", Grade.WRONG, True),
        ("<think>never answered", True, "", Grade.WRONG, False),
    ],
)
def test_rollout_samples_are_graded_by_the_rubric_rules(text, letters_shown, answer, grade_, readable):
    assert grade_sample(MC, text, MED_R3, letters_shown=letters_shown) == (answer, grade_, readable)


def test_open_ended_answers_by_rules():
    assert grade_sample(OPEN, "<think>x</think><answer>Ataxia with Vitamin E deficiency.</answer>", MED_R3,
                        letters_shown=False)[1] == Grade.SAME  # fmt: skip
    assert grade_sample(OPEN, "<think>x</think><answer>Friedreich ataxia</answer>", MED_R3,
                        letters_shown=False)[1] == Grade.WRONG  # fmt: skip


def test_split_rows_use_mirage_std_and_mean_over_samples():
    sample = lambda correct, readable=True, q=(): {"correct": correct, "readable": readable, "queries": list(q),  # noqa: E731
                                                    "sampled_tokens": 10}  # fmt: skip
    preds = [{"id": "1", "accuracy": 0.5, "samples": [sample(True, q=["a"]), sample(False, False)]},
             {"id": "2", "accuracy": 1.0, "samples": [sample(True), sample(True, q=["b", "c"])]},
             {"id": "3", "error": "RuntimeError: boom"}]  # fmt: skip
    row = summarize_split("mirage", "medqa", preds)
    assert (row["n"], row["samples"], row["failed"]) == (3, 4, 1)
    assert row["accuracy"] == pytest.approx(0.5) and row["std"] == pytest.approx(math.sqrt(0.25 / 3))
    assert row["searches_per_question"] == pytest.approx(0.75) and row["unreadable_rate"] == pytest.approx(0.25)
    other = summarize_split("mirage", "pubmedqa", preds[:2])
    avg = average_row([row, other])
    assert avg["accuracy"] == pytest.approx((0.5 + 0.75) / 2) and avg["n"] == 5 and avg["failed"] == 1


def test_mc_eval_predict_with_a_scripted_policy():
    tok = byte_tokenizer()
    style = PromptStyle(mode="mc_eval", chat=False)
    records = [MC, QARecord(id="8", dataset="medqa", question="Longest bone?", options={"A": "Femur", "B": "Ulna"},
                            answer="A", answer_text="Femur"), MC]  # fmt: skip
    replies = ['{"step_by_step_thinking": "b", "answer_choice": "B"}', '{"answer_choice": "B. Ulna"}', "no answer"]
    prompts = [tok.encode(render_prompt(r, style)) for r in records]
    assert tok.decode(prompts[0]).endswith("Think step by step and reply with the JSON object:\n")
    width = max(map(len, prompts)) + 64
    script = np.full((4, width), ord("x"), np.int32)
    for b, (prompt, reply) in enumerate(zip(prompts, replies)):
        row = prompt + tok.encode(reply) + [EOS]
        script[b, : len(row)] = row
    preds = predict(ScriptedLM(script), tok, records, style, batch_size=4, max_new_tokens=64)
    assert [p.output for p in preds] == replies
    assert [(p.correct, p.readable) for p in preds] == [(True, True), (False, True), (False, False)]
    assert [p.tokens for p in preds] == [len(tok.encode(r)) + 1 for r in replies]  # + the end of text
    line = preds[0].as_prediction()
    assert line["accuracy"] == 1.0 and line["samples"][0]["answer"] == "B" and line["samples"][0]["queries"] == []


@pytest.mark.slow
def test_mc_eval_cli_on_the_bundled_set_writes_the_table(tmp_path, sample_data_dir, capsys):
    from medr3_jax import evaluate  # noqa: PLC0415

    out = tmp_path / "results"
    argv = ["--mode", "mc_eval", "--dataset", "mirage", "--split", "medqa", "--split", "pubmedqa",
            "--data_dir", sample_data_dir, "--limit", "2", "--batch_size", "2", "--max_new_tokens", "24",
            "--out_dir", str(out)]  # fmt: skip
    assert evaluate.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().split("\n")]
    assert [(r["split"], r["n"]) for r in rows] == [("medqa", 2), ("pubmedqa", 2)]
    table = (out / "results.md").read_text()
    assert "| dataset | split | n | accuracy (%) |" in table and "| mirage | pubmedqa | 2 |" in table
    preds = [json.loads(line) for line in (out / "predictions_mirage_medqa.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(p["gold"] in "ABCD" for p in preds)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
