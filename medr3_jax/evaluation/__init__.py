"""Evaluation of a policy the way the paper reports it: the training rollout path (retrieval on
or off, greedy or the authors' validation sampling), a checkpoint or model in, per-split
accuracy tables, predictions with their trajectories and charts out (`python -m
medr3_jax.evaluate`)."""

from medr3_jax.evaluation.report import compare_runs, results_table, summarize_split, write_results
from medr3_jax.evaluation.rollouts import AUTHORS_VALIDATION, EvalSettings, evaluate_records, grade_sample

__all__ = [
    "AUTHORS_VALIDATION",
    "EvalSettings",
    "compare_runs",
    "evaluate_records",
    "grade_sample",
    "results_table",
    "summarize_split",
    "write_results",
]
