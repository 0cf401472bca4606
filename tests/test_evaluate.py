"""evaluate: grading of outputs by hand-worked cases, MIRAGE's std, and the batched predict loop
with a scripted policy (one compiled shape, the last batch padded)."""

import json
import math

import numpy as np
import pytest

from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord
from medr3_jax.evaluate import grade, predict, summarize
from tests.sampling.fakes import EOS, ScriptedLM, byte_tokenizer

MC = QARecord(id="7", dataset="medqa", question="Which organ makes insulin?",
              options={"A": "Liver", "B": "Pancreas", "C": "Spleen"}, answer="B", answer_text="Pancreas")  # fmt: skip
OPEN = QARecord(
    id="9", dataset="rarearena", question="Ataxia, low vitamin E.", answer_text="Ataxia with vitamin E deficiency"
)


@pytest.mark.parametrize(
    "output, mode, answer, correct, readable",
    [
        ('{"step_by_step_thinking": "beta cells", "answer_choice": "B"}', "mc_eval", "B", True, True),
        ('{"step_by_step_thinking": "x", "answer_choice": "C. Spleen"}', "mc_eval", "C", False, True),
        ("The pancreas.", "mc_eval", "A", False, False),  # MIRAGE's fallback letter, flagged unreadable
        ("<think>beta cells</think><answer> B. Pancreas </answer>", "reason", "B", True, True),
        ("<think>x</think><answer>pancreas</answer>", "reason", "B", True, True),
        ("<think>x</think><answer>the gut</answer>", "reason", None, False, True),
        ("<think>never answered", "reason", None, False, False),
    ],
)
def test_grade_multiple_choice(output, mode, answer, correct, readable):
    p = grade(MC, output, mode)
    assert (p.answer, p.correct, p.readable, p.gold) == (answer, correct, readable, "B")


def test_grade_open_ended_by_normalised_match():
    assert grade(OPEN, "<answer>ataxia with vitamin-E deficiency.</answer>", "reason").correct is False  # hyphen kept
    assert grade(OPEN, "<answer>Ataxia with Vitamin E deficiency.</answer>", "reason").correct is True


def test_summarize_uses_mirage_std():
    preds = [grade(MC, "<answer>B</answer>", "reason")] * 3 + [grade(MC, "no", "reason")]
    s = summarize(preds)
    assert (s["n"], s["accuracy"], s["unreadable"]) == (4, 0.75, 1)
    assert s["std"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))


def test_predict_with_a_scripted_policy():
    tok = byte_tokenizer()
    style = PromptStyle(mode="reason", chat=False, question_form="choices")  # as evaluate.main renders it
    records = [MC, QARecord(id="8", dataset="medqa", question="Longest bone?", options={"A": "Femur", "B": "Ulna"},
                            answer="A", answer_text="Femur"), MC]  # fmt: skip
    replies = ["<answer> B </answer>", "<answer>Ulna</answer>", "no answer"]
    prompts = [tok.encode(render_prompt(r, style)) for r in records]
    assert tok.decode(prompts[0]).endswith("Options:\nA. Liver\nB. Pancreas\nC. Spleen\nResponse: <think>")
    width = max(map(len, prompts)) + 64
    script = np.full((4, width), ord("x"), np.int32)
    for b, (prompt, reply) in enumerate(zip(prompts, replies)):
        row = prompt + tok.encode(reply) + [EOS]
        script[b, : len(row)] = row
    preds = predict(ScriptedLM(script), tok, records, style, batch_size=4, max_new_tokens=32)
    assert [p.output for p in preds] == replies
    assert [(p.answer, p.correct) for p in preds] == [("B", True), ("B", False), (None, False)]


@pytest.mark.slow
def test_evaluate_cli_on_the_bundled_set_writes_the_table(tmp_path, sample_data_dir, capsys):
    from medr3_jax import evaluate  # noqa: PLC0415

    out = tmp_path / "results"
    argv = ["--dataset", "mirage", "--split", "medqa", "--split", "pubmedqa", "--data_dir", sample_data_dir,
            "--limit", "2", "--batch_size", "2", "--max_new_tokens", "24", "--out_dir", str(out)]  # fmt: skip
    assert evaluate.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().split("\n")]
    assert [(r["split"], r["n"]) for r in rows] == [("medqa", 2), ("pubmedqa", 2)]
    table = (out / "results.md").read_text()
    assert table.startswith("| dataset | split | n | accuracy | unreadable |")
    assert "| mirage | pubmedqa | 2 |" in table
    preds = [json.loads(line) for line in (out / "predictions_medqa.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(p["gold"] in "ABCD" for p in preds)
