"""Preemption (issue 24 item 2): SIGTERM to a running `python -m medr3_jax.train` after its first
step: it finishes the step in flight, writes that step's checkpoint (periodic saves are off, so
only the preemption saves one), exits 143 saying how to resume; the same command then resumes
and its final parameters equal those of an uninterrupted run (the shared `one_process_run`: the
same command with periodic saves, evaluation and audits on, none of which moves the weights)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np

from medr3_jax.trainer.checkpoints import Checkpointer, load_params_from_checkpoint
from medr3_jax.trainer.preemption import EXIT_PREEMPTED
from tests.trainer.train_cli import one_process_env, train_command

STEPS = 3


def _command(workdir, sample_data_dir, byte_index) -> list[str]:
    """`one_process_run`'s command, without periodic saves (only the preemption saves), evaluation
    or audits."""
    off = ["CheckpointConfig.every_steps = 100", "Experiment.eval_every = 0", "Experiment.audit_every = 0"]
    return (
        train_command(workdir, sample_data_dir, byte_index, STEPS)
        + ["--quiet"]
        + [x for binding in off for x in ("--gin_param", binding)]
    )


def _metric_rows(workdir) -> int:
    path = os.path.join(workdir, "stage3", "tb", "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if "loss/total" in line)


def _params(workdir) -> list[np.ndarray]:
    model, meta = load_params_from_checkpoint(os.path.join(workdir, "stage3", "checkpoints"))
    assert meta["step"] == STEPS
    return [np.asarray(x) for x in jax.tree.leaves(model)]


def test_sigterm_checkpoints_the_step_and_the_rerun_equals_an_uninterrupted_run(
    tmp_path, sample_data_dir, byte_index, one_process_run
):
    env = one_process_env() | {"PYTHONUNBUFFERED": "1"}
    stopped = tmp_path / "stopped"
    command = _command(stopped, sample_data_dir, byte_index)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while _metric_rows(stopped) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    # (3 steps: the signal lands during step 1 at the latest, so the run stops at step 1 or 2, before its end)
    assert proc.poll() is None, "the run ended before its first step was logged"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("preempted: stopped after step ") and "run the same command again" in last
    step = int(last.split("after step ")[1].split()[0])
    assert 1 <= step < STEPS
    ckpt = Checkpointer(os.path.join(stopped, "stage3", "checkpoints"), read_only=True)
    assert ckpt.all_steps() == [step]  # only the preemption saved (every_steps = 100)
    ckpt.close()

    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from its checkpoint at step {step}" in resumed.stderr
    for a, b in zip(_params(stopped), _params(one_process_run), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in open(stopped / "stage3" / "tb" / "metrics.jsonl") if "loss/total" in line]
    assert sorted(r["step"] for r in rows) == list(range(STEPS))  # every step trained once
