"""`python -m medr3_jax.data.references`: the authors' reference pipeline (teacher with search ->
1-5 grade kept at 5 -> graph extraction -> embedding) over our index, against a canned
OpenAI-compatible server on 127.0.0.1. Killed with SIGKILL mid-run and rerun, it writes the
bytes an uninterrupted run writes; failures are counted and listed; a resumed run with other
settings is refused, naming what differs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from medr3_jax.data.datasets import load_records
from medr3_jax.data.records import QARecord
from medr3_jax.data.references import FAILURES_SUFFIX, read_references
from medr3_jax.data.references.__main__ import main
from medr3_jax.data.references.prompts import grade_prompt, read_grade, restart_prompt, teacher_prompt
from medr3_jax.data.references.teachers import EndpointTeacher
from medr3_jax.protocol import MED_R3
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.rewards.judge import HTTPJudge
from tests import authors_reference as theirs
from tests.data.reference_endpoints import Endpoints, kind_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args(data_dir, index_dir, url, out, *extra):
    return ["--dataset", "medqa", "--split", "train", "--data_dir", data_dir, "--index_dir", index_dir,
            "--teacher_url", url, "--teacher_model", "canned-teacher", "--grader_url", url,
            "--grader_model", "canned-grader", "--chains", "2", "--max_attempts", "3", "--batch_size", "1",
            "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def endpoints():
    server = Endpoints(delay_s=0.01)
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def built(sample_data_dir, sample_index_dir, endpoints, tmp_path_factory):
    """An uninterrupted build of the sample medqa train split, in this process."""
    out = tmp_path_factory.mktemp("refs") / "medqa-train.jsonl"
    assert main(_args(sample_data_dir, sample_index_dir, endpoints.url, out)) == 0
    return out


def test_grade_prompt_and_reading_are_the_authors():
    record = QARecord(id="q", dataset="medqa", question="Which drug?", options={"A": "x", "B": "y", "C": "z"},
                      answer="B", answer_text="y")  # fmt: skip
    misleading = theirs.misleading_options(record.options, "B")
    expected = theirs.VERIFY_PROMPT_EN.format(
        question="Which drug?", answer="<think>t</think><answer>y</answer>", correct_answer="y",
        misleading_options=misleading,
    )  # fmt: skip
    assert grade_prompt(record, "Which drug?", "<think>t</think><answer>y</answer>") == expected
    assert "[1]: x\n[3]: z" in expected  # their numbering skips the gold's number
    assert teacher_prompt("Q?") == theirs.ANSWER_WITH_THINK_PROMPT_EN.format(question="Q?")
    assert restart_prompt("Q?", "<think>a") == theirs.ANSWER_WITH_THINK_PROMPT_EN_RESTART.format(
        question="Q?", existing_answer="<think>a"
    )
    rare = QARecord(id="r", dataset="rarearena", question="A case.", answer_text="Fabry disease")
    assert grade_prompt(rare, "A case.", "c") == theirs.VERIFY_PROMPT_RAREARENA_EN.format(
        question="A case.", answer="c", correct_answer="Fabry disease"
    )
    for reply in ('```json\n{"score": 5, "reason": "r"}\n```', '{"score": 4}', '{"score": 5.0}', '{"score": "5"}',
                  '{"score": true}', "no json", '```json\n{"score": 7}```'):  # fmt: skip
        ours = read_grade(reply)
        assert (ours is not None and ours >= 5) == theirs.judge_true_false_by_score(theirs.verify_reply(reply)), reply


def test_build_keeps_graded_chains_and_lists_the_rest(built, sample_data_dir, sample_index_dir):
    records = load_records("medqa", "train", sample_data_dir)
    refs = read_references(os.path.dirname(built))  # the folder: the failure list is not read as references
    failures = [json.loads(line) for line in open(str(built).removesuffix(".jsonl") + FAILURES_SUFFIX)]
    kinds = {r.id: kind_of(r.open_question or r.question) for r in records}
    assert {r.id for r in records} == {i for (_, i) in refs} | {f["id"] for f in failures}
    assert all(len(refs[("medqa", i)]) == 2 for i, kind in kinds.items() if kind == "pass")
    expected = {i: {"below_grade": 3} if k == "low_grade" else {"extract_unreadable": 3}
                for i, k in kinds.items() if k != "pass"}  # fmt: skip
    assert {f["id"]: f["reasons"] for f in failures} == expected and all(f["attempts"] == 3 for f in failures)
    retriever = Retriever(sample_index_dir)
    for (_, _), chains in refs.items():
        for ref in chains:
            assert MED_R3.format_score(ref.chain, retrieval=True) == 1.0 and ref.grade == 5.0
            assert "</search><document>" in ref.chain and ref.encoder == retriever.embedding_id
            query = ref.chain.split("<search>")[1].split("</search>")[0].strip()
            assert ref.triples[0][:3] == (query, "is found in", "the corpus")
            fresh = retriever.encode_queries([ref.text])[0]
            np.testing.assert_allclose(ref.vector, fresh, atol=1e-6)  # stored to 6 decimals
    progress = json.load(open(str(built).removesuffix(".jsonl") + ".progress.json"))
    assert progress["report"]["complete"] and progress["report"]["outcomes"]["kept"] == sum(map(len, refs.values()))


def test_sigkill_mid_run_then_rerun_writes_the_same_bytes(
    built, sample_data_dir, sample_index_dir, endpoints, tmp_path
):
    out = tmp_path / "medqa-train.jsonl"
    progress = tmp_path / "medqa-train.progress.json"
    args = _args(sample_data_dir, sample_index_dir, endpoints.url, out)
    slow = Endpoints(delay_s=0.3)  # slow enough to be killed between batches
    try:
        cmd = [sys.executable, "-m", "medr3_jax.data.references", *args]
        cmd[cmd.index(endpoints.url, cmd.index("--teacher_url"))] = slow.url
        cmd[cmd.index(endpoints.url, cmd.index("--grader_url"))] = slow.url
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists() and json.loads(progress.read_text())["batches"] >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    finally:
        slow.shutdown()
    batches = json.loads(progress.read_text())["batches"]
    assert 2 <= batches < 9
    with open(out, "ab") as fh:  # as if killed halfway through appending the next batch
        fh.write(b'{"dataset": "medqa", "id": "half a li')
    assert main(args) == 0
    assert out.read_bytes() == built.read_bytes()
    failures = str(out).removesuffix(".jsonl") + FAILURES_SUFFIX
    assert open(failures, "rb").read() == open(str(built).removesuffix(".jsonl") + FAILURES_SUFFIX, "rb").read()
    assert main(args) == 0 and out.read_bytes() == built.read_bytes()  # a finished build reruns as a no-op


def test_resuming_with_other_settings_names_what_differs(built, sample_data_dir, sample_index_dir, endpoints, capsys):
    args = _args(sample_data_dir, sample_index_dir, endpoints.url, built, "--min_grade", "4")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "differs from the one being resumed" in err and "settings" in err and "--restart" in err


def test_completions_teacher_continues_the_training_prompt(sample_index_dir, endpoints):
    client = HTTPJudge(endpoints.url, "canned", api="completions", retries=0)
    teacher = EndpointTeacher(client, Retriever(sample_index_dir, backend="bm25"), top_k=2)
    question = "Which vitamin deficiency causes scurvy in sailors?"
    before = len(endpoints.prompts)
    (chain,) = teacher.write([QARecord(id="v", dataset="medqa", question=question, answer_text="C")], [question], 0)
    first, second = endpoints.prompts[before:]
    body = MED_R3.prompt_body(question, options={}, context="", retrieval=True, max_searches=4)
    assert first == MED_R3.raw_prompt(body)  # the training prompt, ending in <think>
    assert second == first + chain.removeprefix("<think>").split("</search>")[0] + "</search>" + (
        chain.split("</search>")[1].split(" Reading")[0]
    )
    assert chain.startswith("<think>The case is about") and chain.count("<document>") == 2
    assert MED_R3.format_score(chain, retrieval=True) == 1.0


def test_local_teacher_writes_through_the_training_rollout(smollm2, sample_data_dir, sample_index_dir, tmp_path):
    """SmolLM2 as the teacher, through RolloutEngine: its short rows are not references (the
    rollout flags them, or the grammar rejects them), each counted, none graded, none kept."""
    from medr3_jax.data.references.build import BuildSettings, build_references  # noqa: PLC0415
    from medr3_jax.data.references.teachers import LocalTeacher  # noqa: PLC0415

    class _NoGrader:
        def complete(self, prompts):
            raise AssertionError("a chain that is not well formed is never graded")

    model, tokenizer = smollm2
    records = load_records("medqa", "train", sample_data_dir)[:2]
    retriever = Retriever(sample_index_dir)
    teacher = LocalTeacher(model, tokenizer, retriever, max_tokens=24, chat=True)
    chains = teacher.write(records, ["", ""], seed=3)
    assert chains == teacher.write(records, ["", ""], seed=3)  # seeded: a rerun writes the same
    report = build_references(records, teacher=teacher, grader=_NoGrader(), extractor=_NoGrader(), embed=None,
                              embed_id=None, out_path=str(tmp_path / "r.jsonl"),
                              settings=BuildSettings(chains_per_question=1, max_attempts=2, batch_size=2))  # fmt: skip
    assert report.complete and report.done == 2 and report.references == 0 and report.without == 2
    failed = {k: v for k, v in report.outcomes.items() if k != "kept"}
    assert report.outcomes["kept"] == 0 and sum(failed.values()) == 4  # two attempts per question
    assert set(failed) <= {"malformed", "length", "bad_search", "wrote_document", "search_cap"}
