"""Evaluation during training (`Experiment.eval_every`): the schedule, results and eval/* scalars
recomputed from the predictions, the best step kept beside the newest checkpoints, resume, and
training that is not perturbed by evaluating."""

import json
import os

import jax
import numpy as np
import pytest

from medr3_jax.data.datasets import load_records
from medr3_jax.evaluation.report import summarize_split
from medr3_jax.evaluation.rollouts import EvalSettings, read_predictions
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.trainer import read_scalars
from medr3_jax.trainer.checkpoints import CheckpointConfig
from medr3_jax.trainer.loop import run_stage
from medr3_jax.trainer.periodic_eval import PeriodicEvaluation, eval_metrics, read_best
from tests.evaluation.test_rollouts import STYLE, StandInEngine
from tests.trainer.test_train_loop import _experiment, _final_params


class ImprovingEngine(StandInEngine):
    """The stand-in policy, answering right with a probability the test sets per evaluation."""

    p_correct = 0.5

    def run(self, prompts, *, params, seed):
        rollout = super().run(prompts, params=params, seed=seed)
        n = self.config.group_size
        for row in range(len(rollout.texts)):
            text = self.tokenizer.decode(prompts[row // n])
            record = next(r for r in self.records if (r.open_question or r.question) in text)
            right = np.random.default_rng([seed, row, int(100 * self.p_correct)]).random() < self.p_correct
            wrong = [v for k, v in record.options.items() if k != record.answer][0]
            rollout.texts[row] = f"I think.</think><answer>{record.options[record.answer] if right else wrong}</answer>"
        return rollout


def test_schedule_best_step_and_scalars_from_predictions(sample_data_dir, byte_index, tmp_path):
    records = load_records("mirage", "mmlu", sample_data_dir)
    engine = ImprovingEngine(records, Retriever(byte_index, backend="bm25"), 2)
    settings = EvalSettings(samples=2, temperature=0.6, batch_size=4, seed=1)
    make = lambda: PeriodicEvaluation(engine, {"mirage:mmlu": records}, STYLE, settings,  # noqa: E731
                                      directory=str(tmp_path), every=2, before_train=True, num_steps=5,
                                      run={"stage": "stage3"})  # fmt: skip
    evaluation = make()
    assert [s for s in range(7) if evaluation.due(s)] == [0, 2, 4, 5]
    accuracies = {}
    for step, p in zip([0, 2, 4, 5], [0.9, 0.3, 0.8, 0.5]):
        engine.p_correct = p
        metrics = evaluation.run(step, checkpoint=f"ckpt/{step}")
        predictions = [row for row, _ in read_predictions(str(tmp_path / f"step_{step:06d}" /
                                                              "predictions_mirage_mmlu.jsonl")).values()]  # fmt: skip
        assert [p["id"] for p in predictions] == [r.id for r in records]
        recomputed = np.mean([np.mean([s["correct"] for s in p["samples"]]) for p in predictions])
        assert metrics["eval/accuracy"] == pytest.approx(recomputed) == metrics["eval/mirage_mmlu/accuracy"]
        row = summarize_split("mirage", "mmlu", predictions)
        assert metrics == eval_metrics([row], row | {"dataset": "average"})
        results = json.load(open(tmp_path / f"step_{step:06d}" / "results.json"))
        assert results["average"]["accuracy"] == pytest.approx(recomputed) and results["run"]["step"] == step
        accuracies[step] = recomputed
        assert evaluation.finished(step)
    assert len(set(accuracies.values())) == 4  # the stand-in's accuracy moved
    best_step = max((s for s in accuracies if s >= 1), key=lambda s: accuracies[s])  # step 0 has no checkpoint
    assert accuracies[0] > accuracies[best_step]  # ... even where the start weights scored higher
    best = read_best(str(tmp_path))
    assert best == {"step": best_step, "accuracy": accuracies[best_step], "checkpoint": f"ckpt/{best_step}",
                    "results": str(tmp_path / f"step_{best_step:06d}")}  # fmt: skip
    assert make().best == best  # a resumed run starts from the recorded best


def test_training_with_evaluation_keeps_the_best_and_trains_as_without(sample_data_dir, byte_index, tmp_path):
    kw = dict(num_steps=2, checkpoint=CheckpointConfig(every_steps=1, keep=1, async_save=False))
    # 2 questions x 2 samples: the 4 rows of a training step, so evaluation compiles nothing new
    evaluated = dict(
        eval_data=("mirage:pubmedqa",),
        eval_every=1,
        eval_questions=2,
        eval=EvalSettings(samples=2, temperature=0.6, batch_size=2),
    )
    plain = tmp_path / "plain"
    run_stage(_experiment(sample_data_dir, byte_index, **kw), str(plain))
    run = tmp_path / "evaluated"
    run_stage(_experiment(sample_data_dir, byte_index, **kw | {"num_steps": 1}, **evaluated), str(run))  # "killed"
    run_stage(_experiment(sample_data_dir, byte_index, **kw, **evaluated), str(run))  # resumes at step 1
    stage = run / "stage3"
    assert sorted(os.listdir(stage / "eval")) == ["best.json", "step_000000", "step_000001", "step_000002"]
    scalars = read_scalars(str(stage / "tb"))
    assert [s for s, _ in scalars["eval/accuracy"]] == [0, 1, 2]  # the resumed run did not redo step 1
    for step, value in scalars["eval/accuracy"]:
        results = json.load(open(stage / "eval" / f"step_{step:06d}" / "results.json"))
        assert [(r["dataset"], r["split"], r["n"], r["samples"]) for r in results["rows"]] == [
            ("mirage", "pubmedqa", 2, 4)
        ]
        assert value == pytest.approx(results["average"]["accuracy"])
    best = read_best(str(stage / "eval"))
    assert best["step"] in (1, 2) and best["checkpoint"] == str(stage / "checkpoints" / str(best["step"]))
    kept = sorted(int(n) for n in os.listdir(stage / "checkpoints"))
    assert kept == sorted({best["step"], 2})  # keep=1 keeps the newest; the best stays beside it
    _, model_a, _ = _final_params(plain / "stage3")
    _, model_b, _ = _final_params(stage)
    for x, y in zip(jax.tree.leaves(model_a), jax.tree.leaves(model_b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # evaluating did not perturb training
