"""Train a Med-R3 policy: `python -m medr3_jax.train --gin_file=gin/stage3.gin [--gin_file=...]
[--gin_param="Experiment.num_steps=100"] [--workdir=runs/medr3]`.

Gin files pick the stage(s), model, data, mesh and knobs (docs/CONFIG.md lists every one); with
no model or data bindings it trains the bundled SmolLM2-135M-Instruct on the bundled sample
questions and corpus on CPU for a few steps. Checkpoints, TensorBoard logs, rollout dumps and
the gin config go under `--workdir/<stage>/`; a rerun resumes from the last checkpoint. The
workdir may be a URL (`gs://bucket/run`, with gcsfs: `pip install 'medr3_jax[gcs]'`): Orbax
writes the checkpoints there itself, our files go through `medr3_jax.fileio`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

import gin
from medr3_jax import fileio
from medr3_jax.cli import ArgumentParser, entry_point, one_line
from medr3_jax.data.prompts import PromptStyle
from medr3_jax.evaluation.rollouts import EvalSettings
from medr3_jax.rewards import HTTPJudge, LocalJudge, OverlongConfig, RewardRules, RewardWeights
from medr3_jax.rl import PolicyLossConfig
from medr3_jax.rollout import RolloutConfig
from medr3_jax.sampling import SamplingParams
from medr3_jax.sharding import add_process_flags, initialize_from, is_primary
from medr3_jax.trainer.checkpoints import CheckpointConfig
from medr3_jax.trainer.experiment import Experiment
from medr3_jax.trainer.loop import run_stage
from medr3_jax.trainer.preemption import EXIT_PREEMPTED, Preempted
from medr3_jax.trainer.step import OptimizerConfig, UpdateConfig
from medr3_jax.trainer.summary import SUMMARY_PNG, summarize_run

log = logging.getLogger("medr3_jax.train")

DEFAULT_WORKDIR = os.path.join("runs", "medr3")
STAGES = ("stage0", "stage1", "stage2", "stage3")  # stage0: the optional SFT cold start

# The configurable surface: frozen config dataclasses and the entry point, nothing deeper.
# external_configurable returns the gin-aware class; the stage is built through it.
_CONFIGURABLE = {
    cls.__name__: gin.external_configurable(cls, module="medr3")
    for cls in (Experiment, SamplingParams, PromptStyle, RolloutConfig, RewardWeights, RewardRules, OverlongConfig,
                OptimizerConfig, UpdateConfig, PolicyLossConfig, CheckpointConfig, HTTPJudge, EvalSettings)
}  # fmt: skip


@gin.configurable(module="medr3")
def local_judge(model: str = gin.REQUIRED, max_new_tokens: int = 256, batch_size: int = 8) -> LocalJudge:
    """A local JAX judge from any checkpoint our models load (preset, HF dir, .gguf)."""
    from medr3_jax.models.loading import load_model  # noqa: PLC0415

    judge_model, tokenizer = load_model(model)
    return LocalJudge(judge_model, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size)


@gin.configurable(module="medr3")
def run(stages: Sequence[str] = ("stage3",), workdir: str = DEFAULT_WORKDIR) -> list[str]:
    """Runs the stages in order, each inside its gin scope (`stage2/RolloutConfig.top_k = 3`
    binds for stage 2 only); a stage starts from the previous one's final checkpoint. `workdir`
    may be a URL (gs://...)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"run.stages: unknown stage(s) {unknown}; expected some of {STAGES}")
    fileio.check(workdir, knob="run.workdir")
    done = []
    for stage in stages:
        exp = stage_experiment(stage)
        stage_dir = fileio.join(workdir, stage)
        fileio.makedirs(stage_dir)
        operative = gin.operative_config_str()
        if is_primary():
            fileio.write_text(fileio.join(stage_dir, "operative_config.gin"), operative)
        done.append(run_stage(exp, workdir, operative_config=operative))
    if is_primary():  # what the run changed: a before/after table on stdout, summary.md + summary.png
        table = summarize_run(workdir, list(stages))
        print(f"\nWhat the run changed ({fileio.join(workdir, SUMMARY_PNG)} has the curves):\n{table}", flush=True)
    return done


def stage_experiment(stage: str) -> Experiment:
    """The stage's Experiment, built inside its gin scope (as `run` and the planner build it)."""
    with gin.config_scope(stage):
        return _CONFIGURABLE["Experiment"](stage=stage)


def resolve_gin_file(path: str) -> str | None:
    """`path` itself, else the same relative path inside the installed package, which ships
    `gin/` (so `--gin_file=gin/stage3.gin` works from any directory after a pip install)."""
    if os.path.isfile(path):
        return path
    bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), path)
    return bundled if not os.path.isabs(path) and os.path.isfile(bundled) else None


def parse_gin(files: Sequence[str], params: Sequence[str]) -> str | None:
    """Parses the gin files (their folders join the include path) and bindings; returns the
    error message for the user, or None when the configuration parsed."""
    resolved = []
    for path in files:
        found = resolve_gin_file(path)
        if found is None:
            return f"error: --gin_file {path}: no such file (nor in the installed package's gin/)"
        gin.add_config_file_search_path(os.path.dirname(os.path.abspath(found)))
        resolved.append(found)
    try:
        gin.parse_config_files_and_bindings(resolved, list(params))
    except Exception as err:  # noqa: BLE001 -- gin reports unknown names/bad syntax with several types
        return "error: " + one_line(f"gin configuration: {type(err).__name__}: {err}")
    return None


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m medr3_jax.train", description=__doc__.split("\n")[0])
    p.add_argument("--gin_file", action="append", default=[], help="repeatable; later files override earlier ones")
    p.add_argument("--gin_param", action="append", default=[], help='repeatable, e.g. "Experiment.num_steps = 100"')
    p.add_argument("--workdir", default=None,
                   help=f"checkpoints, logs, rollouts; a path or a gs:// URL (default: {DEFAULT_WORKDIR})")  # fmt: skip
    add_process_flags(p)
    return p.parse_args(argv)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    for noisy in ("jax", "absl", "tensorboard"):  # tensorboard: "No path found after ..." reading our events
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # gin probes `include`d names as package resources before its search path and logs each
    # miss as an error although the file is then found; keep that probe out of the log.
    logging.getLogger().addFilter(lambda record: not record.pathname.endswith("gin/resource_reader.py"))
    args = _parse(argv)
    error = parse_gin(args.gin_file, args.gin_param)
    if error:
        print(error, file=sys.stderr)
        return 2
    workdir = args.workdir or DEFAULT_WORKDIR
    fileio.check(workdir, knob="--workdir")  # gs:// without gcsfs: the install command
    initialize_from(args)
    log.info("workdir: %s", fileio.absolute(workdir))
    fileio.makedirs(workdir)
    if is_primary():
        fileio.write_text(fileio.join(workdir, "config.gin"), gin.config_str())
    try:
        run(workdir=workdir)
    except Preempted as stop:  # a SIGTERM: the checkpoint is written; say how to go on
        print(stop.message, file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
