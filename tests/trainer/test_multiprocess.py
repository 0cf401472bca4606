"""Two processes on 127.0.0.1 stand for two hosts (jax.distributed, gloo collectives). The whole
train loop (tiny model, retrieval on, 3 steps, checkpoints, a SIGTERM to one host and a resume in
the middle) must end
exactly where one process with the same two devices ends; the retriever split across both
processes (exact: rows over their devices; scann: a share of rows each, candidates merged)
must return what one process returns; the process-sharded judge asks each prompt once."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import portpicker
import pytest

from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.trainer import load_params_from_checkpoint, read_scalars
from medr3_jax.trainer.preemption import EXIT_PREEMPTED
from tests.trainer.train_cli import evaluate_command, run_command_on_two_processes, run_one_process, run_two_processes


def _audit_texts(stage_dir):
    files = sorted(glob.glob(os.path.join(stage_dir, "rollouts", "*.jsonl")))
    return [[json.loads(line)["text"] for line in open(f, encoding="utf-8")] for f in files]


@pytest.mark.slow
def test_two_processes_train_resume_and_equal_the_one_process_run(
    tmp_path, sample_data_dir, byte_index, one_process_run
):
    work = tmp_path / "two"
    # The first launch is preempted: process 1 alone gets SIGTERM once step 0 is logged; both
    # processes stop at the same step boundary, with its checkpoint, and exit 143.
    logged = lambda: os.path.exists(work / "stage3" / "tb" / "metrics.jsonl") and "loss/total" in open(  # noqa: E731
        work / "stage3" / "tb" / "metrics.jsonl", encoding="utf-8").read()  # fmt: skip
    first = run_two_processes(work, sample_data_dir, byte_index, 3, portpicker.pick_unused_port(),
                              sigterm_when=logged)  # fmt: skip
    assert [rc for rc, _ in first] == [EXIT_PREEMPTED] * 2, first[0][1][-3000:] + first[1][1][-3000:]
    stops = [log.strip().splitlines()[-1] for _, log in first]
    assert stops[0] == stops[1] and stops[0].startswith("preempted: stopped after step "), stops
    stopped = int(stops[0].split("after step ")[1].split()[0])
    assert stopped in (1, 2)
    second = run_two_processes(work, sample_data_dir, byte_index, 3, portpicker.pick_unused_port())
    assert [rc for rc, _ in second] == [0, 0], second[0][1][-3000:] + second[1][1][-3000:]
    primary_log, other_log = second[0][1], second[1][1]
    assert f"resuming from its checkpoint at step {stopped}" in primary_log and "[stage3] step 2:" in primary_log
    assert "[stage3] step" not in other_log  # one log for the job: process 1 reports only problems

    one_model, one_meta = load_params_from_checkpoint(str(one_process_run / "stage3" / "checkpoints"))
    two_model, two_meta = load_params_from_checkpoint(str(work / "stage3" / "checkpoints"))
    assert one_meta["step"] == two_meta["step"] == 3 and one_meta["data_position"] == two_meta["data_position"] == 3
    for x, y in zip(jax.tree.leaves(one_model), jax.tree.leaves(two_model), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    one, two = read_scalars(str(one_process_run / "stage3" / "tb")), read_scalars(str(work / "stage3" / "tb"))
    assert two["train/grad_norm"][0][1] > 0  # a real gradient crossed the processes
    for tag in ("reward/total", "loss/total", "train/grad_norm", "loss/entropy", "rollout/response_tokens"):
        assert one[tag] == two[tag], tag
    assert len(glob.glob(str(work / "stage3" / "tb" / "events*"))) == 2  # process 0 only: one file per launch
    assert _audit_texts(one_process_run / "stage3") == _audit_texts(work / "stage3")
    # evaluation during training: the same on two processes (each runs every row; process 0 writes)
    assert [s for s, _ in two["eval/accuracy"]] == [2, 3] and one["eval/accuracy"] == two["eval/accuracy"]
    for step in ("step_000002", "step_000003"):
        name = os.path.join("stage3", "eval", step, "predictions_mirage_pubmedqa.jsonl")
        one_lines = open(one_process_run / name, encoding="utf-8").read().splitlines()
        assert len(one_lines) == 3 and one_lines == open(work / name, encoding="utf-8").read().splitlines()
    best = [json.load(open(run / "stage3" / "eval" / "best.json")) for run in (one_process_run, work)]
    assert best[0]["step"] == best[1]["step"] and best[0]["accuracy"] == best[1]["accuracy"]

    # the evaluate CLI on the trained workdir: two processes write what one process writes
    evaluated = [tmp_path / "eval_one", tmp_path / "eval_two"]
    rc, _, err = run_one_process(evaluate_command(work, sample_data_dir, byte_index, evaluated[0]))
    assert rc == 0, err[-3000:]
    cmd = evaluate_command(work, sample_data_dir, byte_index, evaluated[1])
    both = run_command_on_two_processes(cmd, portpicker.pick_unused_port())
    assert [rc for rc, _ in both] == [0, 0], both[0][1][-3000:] + both[1][1][-3000:]
    name = "predictions_mirage_pubmedqa.jsonl"
    lines = [open(d / name, encoding="utf-8").read().splitlines() for d in evaluated]
    assert len(lines[0]) == 3 and lines[0] == lines[1]
    assert [len(json.loads(line)["samples"]) for line in lines[0]] == [2, 2, 2]
    rows = [json.load(open(d / "results.json"))["rows"] for d in evaluated]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows[0]] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in rows[1]
    ]


@pytest.mark.parametrize("backend", ["exact", "scann"])
def test_retriever_split_over_two_processes_returns_the_single_process_top_k(byte_index, backend):
    queries = ["first-line treatment of anaphylaxis", "warfarin reversal", "causes of community-acquired pneumonia"]
    port = portpicker.pick_unused_port()
    script = os.path.join(os.path.dirname(__file__), "multihost_search.py")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [
        subprocess.Popen(
            [sys.executable, script, byte_index, backend, str(port), str(i), *queries],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    ids, scores = Retriever(byte_index, backend="exact").search(queries, 5)  # one process, the reference
    for g in got:  # every process ends with the same, whole-table answer
        assert g["devices"] == 2 and g["ids"] == ids
        np.testing.assert_allclose(np.asarray(g["scores"]), scores, rtol=1e-5)
    prompts = [*queries, "fail", "é"]  # the judge: each prompt asked on one process, replies everywhere
    want = [None if p == "fail" else f"{p} ✓ by {i % 2}" for i, p in enumerate(prompts)]
    assert got[0]["judge"] == got[1]["judge"] == want
    if backend == "exact":
        assert all(g["table_shards"] == 2 and g["local_shards"] == 1 for g in got)
    else:  # each process indexed its half of the 40 rows
        assert [g["local_rows"] for g in got] == [[0, 20], [20, 40]]
