"""`python -m medr3_jax.rewards.score`: JSONL in, one JSON line per input out, the same values
as `score_outcomes` under the stage's gin configuration; malformed lines name file and line; the
trainer's audit files are read as they are."""

import json

import numpy as np
import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.protocol import MED_R3, SEARCH_R1
from medr3_jax.rewards import score as score_cli
from medr3_jax.rewards.combine import RewardWeights
from medr3_jax.rewards.scoring import Outcome, score_outcomes

LINES = [
    {"id": "q1", "question": "Which organ makes insulin?", "answer": "Pancreas", "options": {"A": "Liver", "B": "Pancreas"},
     "response": "Beta cells.<search>insulin organ</search><document>Islets of the pancreas.</document>So the pancreas."
                 "</think><answer>Pancreas</answer>", "response_tokens": 120, "ignored": [1, 2]},
    {"id": 7, "question": "Which organ makes insulin?", "answer": "Pancreas", "response": "x</think><answer>Liver</answer>"},
    {"id": "q3", "question": "Q?", "answer": "Fabry disease", "response": "no tags", "response_tokens": 180},
    {"id": "q4", "question": "Q?", "answer": "Fabry disease", "response": "x<search></search>", "bad_search": True,
     "response_tokens": 190},
]  # fmt: skip


def _write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def _run(capsys, *argv):
    code = score_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_scores_equal_score_outcomes_under_the_stage3_gin(tmp_path, capsys):
    code, out, _ = _run(capsys, "--in", _write(tmp_path / "r.jsonl", LINES), "--stage", "3", "--judge", "rules")
    assert code == 0 and [o["id"] for o in out] == ["q1", "7", "q3", "q4"]
    records = [QARecord(id="q1", dataset="input", question="Which organ makes insulin?",
                        options={"A": "Liver", "B": "Pancreas"}, answer="B", answer_text="Pancreas"),
               QARecord(id="7", dataset="input", question="Which organ makes insulin?", answer_text="Pancreas"),
               QARecord(id="q3", dataset="input", question="Q?", answer_text="Fabry disease"),
               QARecord(id="q4", dataset="input", question="Q?", answer_text="Fabry disease")]  # fmt: skip
    outcomes = [Outcome("<think>" + line["response"], line.get("response_tokens", 0), line.get("bad_search", False),
                        question=line["question"]) for line in LINES]  # fmt: skip
    # gin/stage3.gin: the authors' weights, med_r3, open questions, the demo's 192-token cap
    expected = score_outcomes(outcomes, records, RewardWeights.stage3(), protocol=MED_R3, retrieval=True,
                              max_response_tokens=192)  # fmt: skip
    np.testing.assert_allclose([o["reward"] for o in out], expected.totals, atol=1e-6)
    assert [o["format_ok"] for o in out] == [True, True, False, False]
    assert out[0]["components"]["answer"] == 1.0 and out[0]["components"]["graph"] is None  # no references
    assert out[1]["components"]["answer"] == pytest.approx(0.1) and out[1]["answer_reason"] == "rules"
    assert out[2]["answer_reason"] == "FORMAT_WRONG" and out[3]["answer_reason"] == "BAD_SEARCH"
    assert out[3]["reward"] == pytest.approx(-0.1 - (190 - 151) / 41)  # the bad-search value plus overlong


def test_stage_protocol_and_gin_flags(tmp_path, capsys):
    path = _write(tmp_path / "r.jsonl", LINES[:2])
    _, stage1, _ = _run(capsys, "--in", path, "--stage", "1")
    assert set(stage1[0]["components"]) == {
        "format",
        "answer",
        "format_penalty",
        "think_length",
        "language",
        "overlong",
    }
    assert stage1[0]["components"]["format"] == 1.0  # med_r3 reads a search inside the think as format
    _, r1, _ = _run(capsys, "--in", path, "--protocol", "search_r1")
    assert r1[0]["format_ok"] is False and SEARCH_R1.name == "search_r1"
    _, no_penalties, _ = _run(capsys, "--in", path, "--gin_param", "stage3/RewardWeights.think_length = 0.0")
    assert "think_length" not in no_penalties[0]["components"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "r.jsonl:2: not JSON"),
        ('{"id": "a", "answer": "x", "response": "y"}', "r.jsonl:2: missing field 'question'"),
        ('{"id": "a", "question": "q", "answer": "x", "response": 3}', "r.jsonl:2: field 'response' is int"),
        (
            '{"id": "a", "question": "q", "answer": "x", "options": {"A": "y"}, "response": "z"}',
            "r.jsonl:2: the gold answer 'x' is not one of the options",
        ),
        (
            '{"id": "a", "question": "q", "answer": "x", "response": "z", "bad_search": "yes"}',
            "r.jsonl:2: field 'bad_search' is str, expected bool",
        ),
        ("[1, 2]", "r.jsonl:2: not a JSON object"),
    ],
)
def test_a_malformed_line_is_an_error_naming_file_and_line(tmp_path, capsys, line, message):
    code, out, err = _run(capsys, "--in", _write(tmp_path / "r.jsonl", [LINES[0], line]))
    assert code == 2 and out == [] and err.strip().splitlines()[-1].startswith("error: ") and message in err


def test_bad_flags_are_one_error_line(tmp_path, capsys):
    path = _write(tmp_path / "r.jsonl", LINES[:1])
    assert _run(capsys, "--in", path, "--judge", "ftp://x")[0] == 2
    code, _, err = _run(capsys, "--in", path, "--gin_param", "stage3/RewardWeights.nope = 1")
    assert code == 2 and "error: " in err and "nope" in err
    code, _, err = _run(capsys, "--in", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl" in err


def test_a_runs_audit_file_rescored_by_the_cli_gives_the_logged_rewards(tmp_path, capsys):
    """The trainer's path (`loop.score_rollout` -> `write_audit`) and the CLI reading that file
    under gin/stage3.gin (whose values are the `Experiment` defaults) agree row for row."""
    from medr3_jax.rollout.audit import write_audit  # noqa: PLC0415
    from medr3_jax.rollout.engine import DOCUMENT, PROMPT, SAMPLED, Rollout  # noqa: PLC0415
    from medr3_jax.sampling import StopReason  # noqa: PLC0415
    from medr3_jax.trainer.experiment import Experiment  # noqa: PLC0415
    from medr3_jax.trainer.loop import score_rollout  # noqa: PLC0415

    record = QARecord(id="q7", dataset="medqa", question="Which organ makes insulin?",
                      options={"A": "Liver", "B": "Pancreas"}, answer="B", answer_text="Pancreas")  # fmt: skip
    texts = [
        "Beta cells.<search>insulin organ</search><document>Islets.</document>So the pancreas.</think><answer>Pancreas</answer>",
        "It is the liver.</think><answer>Liver</answer>",
        "rambling without tags",
        "x<search></search>",
    ]
    lengths = [150, 12, 192, 40]
    n, width = len(texts), 256
    provenance = np.zeros((n, width), np.int8)
    provenance[:, :10] = PROMPT
    for i, length in enumerate(lengths):
        provenance[i, 10 : 10 + length] = SAMPLED
    provenance[0, 20:40] = DOCUMENT
    zeros = np.zeros((n, width), np.int32)
    rollout = Rollout(
        tokens=zeros, positions=zeros, mask=provenance != 0, loss_mask=provenance == SAMPLED,
        logprobs=zeros.astype(np.float32), provenance=provenance, group_ids=np.zeros(n, np.int32),
        prompt_lengths=np.full(n, 10, np.int32), response_lengths=np.array(lengths, np.int32),
        search_counts=np.array([1, 0, 0, 0], np.int32), stop_reasons=np.full(n, int(StopReason.EOS), np.int32),
        flags=[frozenset(), frozenset(), frozenset({"length"}), frozenset({"bad_search"})],
        queries=[["insulin organ"], [], [], []], retrieved_ids=[["Islets_1"], [], [], []], texts=texts,
        prefixes=["<think>"] * n, stats={},
    )  # fmt: skip
    exp = Experiment()
    scored = score_rollout(exp, MED_R3, rollout, [record] * n)
    path = write_audit(str(tmp_path / "step_000003.jsonl"), 3, rollout, [record] * n, scored,
                       questions=[record.question] * n)  # fmt: skip
    code, out, _ = _run(capsys, "--in", path, "--stage", "3")
    assert code == 0 and [o["id"] for o in out] == ["q7"] * n
    logged = [json.loads(line) for line in open(path, encoding="utf-8")]
    np.testing.assert_allclose([o["reward"] for o in out], [line["reward"] for line in logged], atol=1e-6)
    assert [o["components"] for o in out] == [line["components"] for line in logged]
    assert [o["answer_reason"] for o in out] == ["rules", "rules", "FORMAT_WRONG", "BAD_SEARCH"]
