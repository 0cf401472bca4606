"""`python -m medr3_jax.train --workdir <URL>` end to end on a fake object store (`fakegcs://`,
tests/fake_gcs.py: whole objects only, like Cloud Storage): a tiny stage 1 (one step, then an
evaluation), then a rerun with one more step that resumes. Our files (config.gin, operative_config.gin,
metrics.jsonl, TensorBoard event files, audit files, evaluation outputs, best.json, the run
summary) land on the store. Orbax cannot write to a made-up protocol (etils.epath knows gs://,
s3://, az:// and hf:// only, and tensorstore writes gs:// arrays with its own GCS driver), so
the checkpoints go to a local folder here; on gs:// Orbax writes them itself."""

from __future__ import annotations

import json
import os

import pytest

import gin
from medr3_jax import fileio
from medr3_jax.trainer import inputs, read_scalars
from tests.fake_gcs import registered
from tests.trainer.train_cli import GIN_DIR

WORKDIR = "fakegcs://bucket/run"


@pytest.fixture
def fake_gcs():
    with registered() as fs:
        yield fs


def _train(sample_data_dir: str, steps: int) -> int:
    from medr3_jax import train  # noqa: PLC0415

    params = [f"Experiment.num_steps = {steps}", f"Experiment.data_dir = '{sample_data_dir}'",
              "Experiment.train_data = ('medqa:train',)", "RolloutConfig.max_response_tokens = 24",
              "CheckpointConfig.async_save = False", "CheckpointConfig.every_steps = 1",
              "Experiment.eval_data = ('mirage:pubmedqa',)", "Experiment.eval_every = 1",
              "Experiment.eval_before_train = False", "Experiment.eval_questions = 2", "EvalSettings.samples = 2",
              "EvalSettings.temperature = 0.6", "EvalSettings.batch_size = 2"]  # fmt: skip
    argv = ["--gin_file", os.path.join(GIN_DIR, "stage1.gin"), "--gin_file", os.path.join(GIN_DIR, "tiny.gin")]
    gin.clear_config()
    try:
        return train.main(argv + [a for p in params for a in ("--gin_param", p)] + ["--workdir", WORKDIR])
    finally:
        gin.clear_config()


def test_a_stage_writes_its_files_to_an_object_store_and_resumes(fake_gcs, sample_data_dir, tmp_path, monkeypatch,
                                                                 capsys):  # fmt: skip
    real = inputs.Checkpointer

    def local_checkpoints(directory, config=None, **kw):  # Orbax: a local folder (see the module docstring)
        assert directory.startswith(f"{WORKDIR}/")
        return real(str(tmp_path / "checkpoints") + directory.removeprefix(WORKDIR), config, **kw)

    monkeypatch.setattr(inputs, "Checkpointer", local_checkpoints)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a URL taken for a local path would leave a 'fakegcs:' folder here

    assert _train(sample_data_dir, 1) == 0
    assert "starting from the base model random:tiny" in capsys.readouterr().err  # no stage0 under the URL
    assert _train(sample_data_dir, 2) == 0
    assert "[stage1] resuming from its checkpoint at step 1" in capsys.readouterr().err
    assert os.listdir(cwd) == []

    stage = fileio.join(WORKDIR, "stage1")
    assert "Experiment.num_steps = 2" in fileio.read_text(fileio.join(WORKDIR, "config.gin"))
    assert "stage1/RolloutConfig.retrieval = False" in fileio.read_text(fileio.join(stage, "operative_config.gin"))
    # metrics.jsonl: the rerun appended to the first run's rows (training steps 0 and 1, evaluations at 1 and 2)
    rows = [json.loads(line) for line in fileio.read_text(fileio.join(stage, "tb", "metrics.jsonl")).splitlines()]
    assert [r["step"] for r in rows if "reward/total" in r] == [0, 1]
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [1, 2]  # step 1's evaluation was not redone
    events = [n for n in fileio.listdir(fileio.join(stage, "tb")) if n.startswith("events.out.tfevents.")]
    assert len(events) == 2  # one per run
    scalars = read_scalars(fileio.join(stage, "tb"))
    assert [s for s, _ in scalars["reward/total"]] == [0, 1] and [s for s, _ in scalars["eval/accuracy"]] == [1, 2]
    assert fileio.listdir(fileio.join(stage, "rollouts")) == [f"step_{s:06d}.jsonl" for s in range(2)]
    for step in range(2):
        audit = fileio.read_text(fileio.join(stage, "rollouts", f"step_{step:06d}.jsonl")).splitlines()
        assert [json.loads(line)["step"] for line in audit] == [step] * 4  # 2 questions x 2 samples
    assert fileio.listdir(fileio.join(stage, "eval")) == ["best.json", "step_000001", "step_000002"]
    for step in (1, 2):
        assert fileio.listdir(fileio.join(stage, "eval", f"step_{step:06d}")) == [
            "accuracy.png", "predictions_mirage_pubmedqa.jsonl", "results.json", "results.md"]  # fmt: skip
    best = json.loads(fileio.read_text(fileio.join(stage, "eval", "best.json")))
    assert best["results"] == fileio.join(stage, "eval", f"step_{best['step']:06d}")
    assert fileio.read_text(fileio.join(WORKDIR, "summary.md")).startswith(f"Run {WORKDIR}, stages stage1")
    assert fileio.isfile(fileio.join(WORKDIR, "summary.png"))
    assert sorted(os.listdir(tmp_path / "checkpoints" / "stage1" / "checkpoints")) == ["1", "2"]
    assert not fileio.exists(fileio.join(stage, "checkpoints"))  # (redirected: see the module docstring)
