"""Evaluation during training (`Experiment.eval_every`, `eval_data`): held-out questions answered
on the training rollout path (`evaluation.rollouts`: the stage's sampler, retriever, protocol and
prompt, with the weights of the moment) every N steps, at the end, and before the first step.

    evaluation = PeriodicEvaluation(engine, splits, style, settings, directory=f"{stage_dir}/eval",
                                    every=10, before_train=True, num_steps=100, run={"stage": "stage3"})
    if evaluation.due(step) and not evaluation.finished(step):
        metrics = evaluation.run(step)      # eval/* scalars; `evaluation.best` follows the accuracy
    evaluation.run_if_due(step, checkpointer, writer)   # the same, from the trainer: scalars + best kept

"Step N" is the weights after N updates, the ones checkpoint N holds. Each evaluation goes to
`<directory>/step_<N>/` as the `python -m medr3_jax.evaluate` CLI writes a run (predictions per
split appended per batch, results.md, accuracy.png, then results.json), so `evaluate compare`
reads them; a run killed mid-evaluation resumes its predictions, and a step whose results.json
exists is `finished`. Under a remote workdir (gs://) a step's files are written in a local mirror
(`fileio.LocalMirror`) and uploaded when its evaluation is done, results.json last; a run killed
mid-evaluation there redoes that step's evaluation. `<directory>/best.json` names the step
(>= 1) with the highest average accuracy so far and its checkpoint; the trainer keeps that
checkpoint besides the newest.
The authors never evaluate during training (`trainer.test_freq=-1` and
`val_before_train=False` in `myverl/med_R3_grpo.sh`, GitHub 8023looker/Med-R3), so the paper
recipe leaves this off.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Mapping, Sequence

from medr3_jax import fileio
from medr3_jax.data.prompts import PromptStyle
from medr3_jax.data.records import QARecord
from medr3_jax.evaluation.report import RESULTS_JSON, average_row, summarize_split, write_results
from medr3_jax.evaluation.rollouts import EvalSettings, evaluate_records
from medr3_jax.rollout import RolloutEngine
from medr3_jax.sharding import is_primary, sync
from medr3_jax.trainer.checkpoints import Checkpointer
from medr3_jax.trainer.metrics import MetricWriter

log = logging.getLogger("medr3_jax.train")

BEST_FILE = "best.json"


class PeriodicEvaluation:
    """Runs the stage's evaluation when it is due and keeps track of the best step.

    splits: "dataset:split" -> its records, in table order; every process passes the same
    (every process runs every row, as in training; only the primary writes files)."""

    def __init__(
        self,
        engine: RolloutEngine,
        splits: Mapping[str, Sequence[QARecord]],
        style: PromptStyle,
        settings: EvalSettings,
        *,
        directory: str,
        every: int,
        before_train: bool,
        num_steps: int,
        run: Mapping[str, Any],
    ):
        if every < 1:
            raise ValueError(f"Experiment.eval_every={every}: expected >= 1 when evaluating")
        if engine.config.group_size != settings.samples:
            raise ValueError(f"the evaluation engine's group_size {engine.config.group_size} != {settings.samples}")
        self.engine, self.splits, self.style, self.settings = engine, dict(splits), style, settings
        self.directory, self.every, self.before_train, self.num_steps = directory, every, before_train, num_steps
        self.run_info = dict(run)
        self.best = read_best(directory)

    def due(self, step: int) -> bool:
        """Every `every` steps, after the last, and at step 0 with `before_train`."""
        if step == 0:
            return self.before_train
        return step <= self.num_steps and (step % self.every == 0 or step == self.num_steps)

    def step_dir(self, step: int) -> str:
        return fileio.join(self.directory, f"step_{step:06d}")

    def finished(self, step: int) -> bool:
        """Whether an earlier run completed this step's evaluation (its results.json is there)."""
        return fileio.exists(fileio.join(self.step_dir(step), RESULTS_JSON))

    def run(self, step: int, *, checkpoint: str | None = None) -> dict[str, float]:
        """Evaluates the current weights as step `step` (resuming the step's predictions files);
        returns the eval/* scalars. `checkpoint`: the step's checkpoint directory, recorded in
        best.json when this step is the best so far."""
        out_dir = self.step_dir(step)
        started = time.perf_counter()
        mirror = fileio.LocalMirror(out_dir)  # out_dir itself when local
        mirror.pull()  # a remote step's files, were any left there
        sync(f"eval {step} start")  # a resumed predictions file is read by every process alike
        rows = []
        for key, records in self.splits.items():
            dataset, _, split = key.rpartition(":")
            path = os.path.join(mirror.local, f"predictions_{dataset.replace('/', '_')}_{split}.jsonl")
            predictions = evaluate_records(self.engine, records, self.style, self.settings, predictions_path=path,
                                           write=is_primary())  # fmt: skip
            rows.append(summarize_split(dataset, split, predictions))
        run = {"name": f"{self.run_info.get('stage', 'stage')} step {step}", "step": step, **self.run_info}
        average = average_row(rows)
        if is_primary():
            write_results(mirror.local, run, rows)
            mirror.push(last=(RESULTS_JSON,))  # results.json last: its presence says the step is complete
        mirror.close()
        accuracy = float(average["accuracy"])
        if step >= 1 and (self.best is None or accuracy > self.best["accuracy"]):
            self.best = {"step": step, "accuracy": accuracy, "checkpoint": checkpoint, "results": out_dir}
            if is_primary():
                fileio.atomic_write_text(fileio.join(self.directory, BEST_FILE), json.dumps(self.best, indent=1))
        sync(f"eval {step} written")
        log.info("evaluation at step %d: accuracy %.3f (%s); best %s; %.1fs", step, accuracy,
                 ", ".join(f"{r['dataset']}:{r['split']} {r['accuracy']:.3f}" for r in rows),
                 f"{self.best['accuracy']:.3f} at step {self.best['step']}" if self.best else "-",
                 time.perf_counter() - started)  # fmt: skip
        return eval_metrics(rows, average)

    def run_if_due(self, step: int, checkpointer: Checkpointer, writer: MetricWriter) -> None:
        """The trainer's call before each step and after the last: evaluates the weights after
        `step` updates (checkpoint `step`, when step >= 1) if due and not finished by an earlier
        run, writes the eval/* scalars at `step`, and keeps a new best checkpoint."""
        if not self.due(step) or self.finished(step):
            return
        writer.scalars(step, self.run(step, checkpoint=checkpointer.step_dir(step) if step else None))
        self.protect_best(checkpointer)

    def protect_best(self, checkpointer: Checkpointer) -> None:
        """Keeps the best step's checkpoint beside the newest `CheckpointConfig.keep`."""
        if self.best is not None:
            checkpointer.keep_also([self.best["step"]])


def eval_metrics(rows: Sequence[Mapping[str, Any]], average: Mapping[str, Any]) -> dict[str, float]:
    """The eval/* scalars: the average's accuracy, searches, unreadable and format-valid rates,
    tokens and failed count, and each split's accuracy as eval/<dataset>_<split>/accuracy."""
    out = {
        "eval/accuracy": float(average["accuracy"]),
        "eval/searches_per_question": float(average["searches_per_question"]),
        "eval/unreadable_rate": float(average["unreadable_rate"]),
        "eval/format_rate": float(average["format_rate"]),
        "eval/tokens_per_answer": float(average["tokens_per_answer"]),
        "eval/failed": float(average["failed"]),
    }
    for r in rows:
        out[f"eval/{r['dataset'].replace('/', '_')}_{r['split']}/accuracy"] = float(r["accuracy"])
    return out


def read_best(directory: str) -> dict[str, Any] | None:
    """The best step so far ({"step", "accuracy", "checkpoint", "results"}), or None."""
    return _read_json(fileio.join(directory, BEST_FILE))


def _read_json(path: str) -> dict[str, Any] | None:
    if not fileio.exists(path):
        return None
    try:
        return json.loads(fileio.read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg}); move the file away to evaluate that step again") from None
