"""The whole train loop on the tiny random model with retrieval on: checkpoints, exact resume
(an interrupted run continues to the same parameters as an uninterrupted one), stage chaining,
metrics and audit files; and every shipped gin file parses and builds its Experiment."""

import glob
import importlib.util
import json
import os

import jax
import numpy as np
import pytest

import gin
from medr3_jax.data.prompts import PromptStyle
from medr3_jax.rewards import RewardWeights
from medr3_jax.rl import PolicyLossConfig
from medr3_jax.rollout import RolloutConfig
from medr3_jax.trainer import Checkpointer, load_params_from_checkpoint, read_scalars
from medr3_jax.trainer.checkpoints import CheckpointConfig
from medr3_jax.trainer.experiment import Experiment
from medr3_jax.trainer.loop import run_stage
from medr3_jax.trainer.step import OptimizerConfig, UpdateConfig
from tests.trainer.train_cli import GIN_DIR, start_one_process


def _experiment(sample_data_dir, byte_index, **kw):
    args = dict(
        stage="stage3", model="random:tiny", data_dir=sample_data_dir, index_dir=byte_index,
        train_data=("medqa:train", "pubmedqa:train"), num_steps=3, prompts_per_step=2, prompt_buckets=(2048, 4096),
        prompt=PromptStyle(mode="search", chat=False), rewards=RewardWeights.stage2(),
        rollout=RolloutConfig(group_size=2, top_k=2, max_response_tokens=48, decode_segment=16, sequence_bucket=128),
        update=UpdateConfig(micro_batch=2), checkpoint=CheckpointConfig(every_steps=1, keep=5, async_save=False),
        optimizer=OptimizerConfig(learning_rate=1e-2),  # large: weight decay alone visibly moves the weights
    )  # fmt: skip
    return Experiment(**(args | kw))


def _final_params(stage_dir):
    model, meta = load_params_from_checkpoint(os.path.join(stage_dir, "checkpoints"))
    return jax.tree.map(np.asarray, model.layers.q_proj[...]), model, meta


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, sample_data_dir, byte_index):
    # With a KL term: the resumed run must reload the stage's start weights as its reference.
    kl = UpdateConfig(micro_batch=2, loss=PolicyLossConfig(kl_coef=0.1, kl_estimator="k3"))
    straight = tmp_path / "straight"
    run_stage(_experiment(sample_data_dir, byte_index, update=kl), str(straight))
    interrupted = tmp_path / "interrupted"
    run_stage(_experiment(sample_data_dir, byte_index, num_steps=2, update=kl), str(interrupted))  # "killed" after 2
    run_stage(_experiment(sample_data_dir, byte_index, update=kl), str(interrupted))  # resumes at step 2
    a, model_a, meta_a = _final_params(straight / "stage3")
    b, model_b, meta_b = _final_params(interrupted / "stage3")
    assert meta_a["step"] == meta_b["step"] == 3 and meta_a["data_position"] == meta_b["data_position"] == 3
    for x, y in zip(jax.tree.leaves(model_a), jax.tree.leaves(model_b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(a, np.asarray(_initial_q_proj()))  # training changed the weights

    scalars = read_scalars(str(straight / "stage3" / "tb"))
    assert [s for s, _ in scalars["reward/total"]] == [0, 1, 2]
    kl_straight = [v for _, v in scalars["loss/kl"]]
    kl_resumed = [v for _, v in read_scalars(str(interrupted / "stage3" / "tb"))["loss/kl"]]
    assert abs(kl_straight[0]) < 1e-6 < kl_straight[2]  # the policy starts at its reference, then drifts
    assert kl_resumed == kl_straight
    assert {"loss/total", "rollout/idle_share", "train/grad_norm", "reward/format", "reward/format_ok"} <= set(scalars)
    audit = sorted(glob.glob(str(straight / "stage3" / "rollouts" / "*.jsonl")))
    assert len(audit) == 3
    rows = [json.loads(line) for line in open(audit[0], encoding="utf-8")]
    assert len(rows) == 4 and {"text", "components", "tokens", "retrieved", "question", "format_ok",
                               "answer_reason", "bad_search", "response_tokens"} <= set(rows[0])  # fmt: skip
    assert all(row["prefix"] == "<think>" for row in rows)  # the med_r3 raw prompt ends with "Response: <think>"
    assert "format" in rows[0]["components"]


def _initial_q_proj():
    from medr3_jax.models.loading import load_model  # noqa: PLC0415

    return load_model("random:tiny")[0].layers.q_proj[...]


def test_stage_chaining_starts_from_the_previous_stage(tmp_path, sample_data_dir, byte_index, caplog):
    stage1 = _experiment(sample_data_dir, byte_index, stage="stage1", num_steps=1,
                         prompt=PromptStyle(mode="reason", chat=False),
                         rollout=RolloutConfig(group_size=2, retrieval=False, max_response_tokens=32, decode_segment=16),
                         rewards=RewardWeights.stage1())  # fmt: skip
    run_stage(stage1, str(tmp_path))
    # stage 2 at lr 0 (AdamW's step and its weight decay both scale with lr): its checkpoint holds
    # exactly the weights it started from
    frozen = OptimizerConfig(learning_rate=0.0)
    with caplog.at_level("INFO", logger="medr3_jax.train"):
        run_stage(_experiment(sample_data_dir, byte_index, stage="stage2", num_steps=1, rewards=RewardWeights.stage2(),
                              optimizer=frozen), str(tmp_path))  # fmt: skip
    assert "starting from " + str(tmp_path / "stage1" / "checkpoints" / "1") in caplog.text
    _, stage1_model, _ = _final_params(tmp_path / "stage1")
    _, stage2_model, stage2_meta = _final_params(tmp_path / "stage2")
    assert stage2_meta["stage"] == "stage2" and stage2_meta["step"] == 1
    for x, y in zip(jax.tree.leaves(stage2_model), jax.tree.leaves(stage1_model), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(stage1_model.layers.q_proj[...], _initial_q_proj())  # stage 1 did train


def test_mismatched_prompt_and_retrieval_are_refused():
    with pytest.raises(ValueError, match="retrieval goes with the 'search' prompt"):
        Experiment(prompt=PromptStyle(mode="reason"), rollout=RolloutConfig(retrieval=True))


@pytest.mark.parametrize("stage_file", ["stage1.gin", "stage2.gin", "stage3.gin", "progressive.gin"])
@pytest.mark.parametrize(
    "model_file", [None, "models/smollm2_135m.gin", "models/qwen2_5_7b.gin", "models/llama3_1_8b_instruct.gin"]
)
def test_every_gin_file_builds_its_experiment(stage_file, model_file):
    from medr3_jax import train  # noqa: PLC0415 (registers the configurables)

    gin.clear_config()
    gin.add_config_file_search_path(GIN_DIR)
    files = [os.path.join(GIN_DIR, stage_file)] + ([os.path.join(GIN_DIR, model_file)] if model_file else [])
    gin.parse_config_files_and_bindings(
        files + [os.path.join(GIN_DIR, "tiny.gin"), os.path.join(GIN_DIR, "scale/paper.gin")], []
    )
    stages = gin.query_parameter("medr3.run.stages")
    for stage in stages:
        with gin.config_scope(stage):
            exp = train._CONFIGURABLE["Experiment"](stage=stage)
        assert exp.rollout.retrieval == (stage != "stage1") and exp.rollout.group_size == 16
        assert exp.rewards == {"stage1": RewardWeights.stage1(), "stage2": RewardWeights.stage2(),
                               "stage3": RewardWeights.stage3()}[stage]  # fmt: skip
    gin.clear_config()


def test_train_cli_rejects_unknown_bindings_and_missing_files(capsys):
    from medr3_jax import train  # noqa: PLC0415

    gin.clear_config()
    assert (
        train.main(["--gin_file", os.path.join(GIN_DIR, "stage3.gin"), "--gin_param", "Experiment.num_stepz = 3"]) == 2
    )
    assert "num_stepz" in capsys.readouterr().err
    gin.clear_config()
    assert train.main(["--gin_file", "gin/nope.gin"]) == 2
    assert "gin/nope.gin: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_to_the_same_parameters(
    tmp_path, sample_data_dir, byte_index, one_process_run
):
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    killed = start_one_process(tmp_path / "killed", sample_data_dir, byte_index, 3)
    first = tmp_path / "killed" / "stage3" / "checkpoints" / "1"
    deadline = time.time() + 600
    while not (first / "meta").exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)  # kill -9 somewhere after the first checkpoint
    killed.wait()
    assert killed.returncode == -signal.SIGKILL  # died by the signal, not by finishing first
    assert not (tmp_path / "killed" / "stage3" / "checkpoints" / "3").exists()  # before the last step
    resumed = start_one_process(tmp_path / "killed", sample_data_dir, byte_index, 3)
    log = resumed.communicate(timeout=600)[1]
    assert resumed.returncode == 0, log[-3000:]
    assert "resuming from its checkpoint at step" in log
    _, model_a, meta_a = _final_params(one_process_run / "stage3")
    _, model_b, meta_b = _final_params(tmp_path / "killed" / "stage3")
    assert meta_a["step"] == meta_b["step"] == 3
    for x, y in zip(jax.tree.leaves(model_a), jax.tree.leaves(model_b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_progressive_gin_runs_all_three_stages(tmp_path, sample_data_dir, byte_index):
    from medr3_jax import train  # noqa: PLC0415

    gin.clear_config()
    gin.add_config_file_search_path(GIN_DIR)
    bindings = ["Experiment.num_steps = 1", f"Experiment.data_dir = '{sample_data_dir}'",
                f"Experiment.index_dir = '{byte_index}'", "Experiment.train_data = ('medqa:train',)",
                "RolloutConfig.max_response_tokens = 24", "CheckpointConfig.async_save = False"]  # fmt: skip
    gin.parse_config_files_and_bindings(
        [os.path.join(GIN_DIR, "progressive.gin"), os.path.join(GIN_DIR, "tiny.gin")], bindings
    )
    done = train.run(workdir=str(tmp_path))
    gin.clear_config()
    assert done == [str(tmp_path / s / "checkpoints") for s in ("stage1", "stage2", "stage3")]
    metas = [Checkpointer(d).restore_meta() for d in done]
    assert [m["stage"] for m in metas] == ["stage1", "stage2", "stage3"]
    assert "stage2/RolloutConfig.retrieval = True" in metas[1]["operative_config"]
    for stage in ("stage1", "stage2", "stage3"):
        assert (tmp_path / stage / "operative_config.gin").exists()


def test_gin_files_resolve_inside_the_installed_package_from_any_directory(tmp_path, monkeypatch):
    from medr3_jax import train  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)  # no gin/ here: the package's copy answers
    gin.clear_config()
    try:
        assert train.parse_gin(["gin/stage3.gin", "gin/tiny.gin"], ["Experiment.num_steps = 7"]) is None
        exp = train.stage_experiment("stage3")
        assert (exp.model, exp.num_steps, exp.rollout.retrieval) == ("random:tiny", 7, True)
    finally:
        gin.clear_config()


def test_unknown_cache_attention_names_the_knob():
    with pytest.raises(ValueError, match=r"Experiment.cache_attention='flash': expected 'blockwise' or 'dense'"):
        Experiment(cache_attention="flash")


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed: gs:// opens")
def test_a_gs_workdir_without_gcsfs_names_the_flag_and_the_install_command(capsys):
    # a gs:// workdir is written directly (tests/trainer/test_remote_workdir.py); it needs gcsfs
    from medr3_jax import train  # noqa: PLC0415

    gin.clear_config()
    try:
        assert train.main(["--gin_file", os.path.join(GIN_DIR, "stage3.gin"), "--workdir", "gs://bucket/run"]) == 2
    finally:
        gin.clear_config()
    err = capsys.readouterr().err
    assert "--workdir='gs://bucket/run'" in err and "pip install 'medr3_jax[gcs]'" in err


def test_protocol_estimator_and_overlong_knobs_are_checked_at_construction():
    from medr3_jax.rewards import OverlongConfig  # noqa: PLC0415

    with pytest.raises(ValueError, match=r"Experiment.protocol='r1': expected one of \['med_r3', 'search_r1'\]"):
        Experiment(protocol="r1")
    with pytest.raises(ValueError, match=r"Experiment.advantage_estimator='ppo': expected one of"):
        Experiment(advantage_estimator="ppo")
    with pytest.raises(ValueError, match="OverlongConfig.buffer=500 exceeds the response cap of 192 tokens"):
        Experiment(overlong=OverlongConfig(buffer=500))
    assert Experiment(protocol="search_r1", advantage_estimator="rloo").advantage_estimator == "rloo"
