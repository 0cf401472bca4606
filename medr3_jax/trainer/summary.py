"""What a training run changed: a before/after table and the curves, from the files the stages
wrote (`<stage>/tb` scalars, `<stage>/eval/step_N/results.json`).

    table = summarize_run("runs/demo", ["stage0", "stage3"])   # also writes summary.md, summary.png

The workdir may be a URL (gs://): files are read and written through `medr3_jax.fileio`.

Before = the first value the run recorded, after = the last: held-out evaluation (accuracy,
format-valid rate, unreadable answers, searches per question; the first evaluation of the first
stage that evaluates, the last of the last), the RL stages' training rollouts (mean reward,
format-valid rate, searches per row: the first and last step) and the cold start's NLL. A row
says whether its number moved; a run that recorded a number once says so instead.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from medr3_jax import fileio
from medr3_jax.evaluation.report import RESULTS_JSON
from medr3_jax.trainer.metrics import read_scalars

SUMMARY_MD, SUMMARY_PNG = "summary.md", "summary.png"
# (label, where, key, better): where "eval" reads results.json's average, "tb" a scalar tag
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("held-out accuracy", "eval", "accuracy", "up"),
    ("held-out format-valid rate", "eval", "format_rate", "up"),
    ("held-out unreadable answers", "eval", "unreadable_rate", "down"),
    ("held-out searches / question", "eval", "searches_per_question", ""),
    ("training reward (mean of the step)", "tb", "reward/total", "up"),
    ("training format-valid rate", "tb", "reward/format_ok", "up"),
    ("training searches / row", "tb", "rollout/searches_per_row", ""),
    ("cold-start NLL (stage 0)", "tb", "loss/nll", "down"),
)


def _evaluations(stage_dir: str) -> list[tuple[int, dict[str, Any]]]:
    """(step, results.json average) of a stage's evaluations, by step."""
    root = fileio.join(stage_dir, "eval")
    out = []
    for name in fileio.listdir(root) if fileio.isdir(root) else []:
        path = fileio.join(root, name, RESULTS_JSON)
        if name.startswith("step_") and fileio.exists(path):
            out.append((int(name.removeprefix("step_")), json.loads(fileio.read_text(path))["average"]))
    return out


def run_series(workdir: str, stages: Sequence[str]) -> dict[str, list[tuple[str, int, float]]]:
    """key -> [(stage, step, value)] over the stages in order, for every key of `ROWS`."""
    series: dict[str, list[tuple[str, int, float]]] = {key: [] for _, _, key, _ in ROWS}
    for stage in stages:
        stage_dir = fileio.join(workdir, stage)
        tb = fileio.join(stage_dir, "tb")
        scalars = read_scalars(tb) if fileio.isdir(tb) else {}
        evaluations = _evaluations(stage_dir)
        for _, where, key, _ in ROWS:
            if where == "eval":
                series[key] += [(stage, step, float(avg.get(key, 0.0))) for step, avg in evaluations]
            else:
                series[key] += [(stage, step, float(value)) for step, value in scalars.get(key, [])]
    return series


def summary_table(series: dict[str, list[tuple[str, int, float]]]) -> str:
    """The markdown before/after table of `run_series`."""
    lines = ["| | before | after | change |", "|---|---|---|---|"]
    for label, _, key, better in ROWS:
        points = series[key]
        if not points:
            continue
        (s0, t0, first), (s1, t1, last) = points[0], points[-1]
        where = f"{s0} step {t0} → {s1} step {t1}"
        if len(points) == 1:
            change = "recorded once"
        elif abs(last - first) < 1e-9:
            change = "did not move"
        else:
            direction = "up" if last > first else "down"
            change = f"{last - first:+.3f} ({direction}{', better' if direction == better else ''})"
        lines.append(f"| {label} ({where}) | {first:.3f} | {last:.3f} | {change} |")
    return "\n".join(lines) + "\n"


def _chart(path: str, series: dict[str, list[tuple[str, int, float]]]) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = [("training reward", ["reward/total", "reward/format_ok"]),
              ("held-out evaluation", ["accuracy", "format_rate"]), ("cold start", ["loss/nll"])]  # fmt: skip
    panels = [(title, [k for k in keys if series[k]]) for title, keys in panels]
    panels = [(title, keys) for title, keys in panels if keys]
    # one run-wide step axis: each stage starts where the one before it ended (its last step seen)
    stages = list(dict.fromkeys(s for points in series.values() for s, _, _ in points))
    offsets, end = {}, 0
    for stage in stages:
        offsets[stage] = end
        end += max(t for points in series.values() for s, t, _ in points if s == stage)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 3.4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            xs = [offsets[s] + t for s, t, _ in series[key]]
            ax.plot(xs, [v for _, _, v in series[key]], marker="o", label=key)
        for stage in stages[1:]:
            ax.axvline(offsets[stage], color="grey", linestyle=":", linewidth=1)
            ax.annotate(stage, (offsets[stage], 1), xycoords=("data", "axes fraction"), fontsize=7, va="top")
        ax.set_title(title)
        ax.set_xlabel(f"step ({' then '.join(stages)})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with fileio.open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def summarize_run(workdir: str, stages: Sequence[str]) -> str:
    """The before/after table of the stages under `workdir`; writes it as summary.md and the
    curves as summary.png into `workdir`."""
    series = run_series(workdir, stages)
    table = summary_table(series)
    fileio.write_text(
        fileio.join(workdir, SUMMARY_MD), f"Run {fileio.absolute(workdir)}, stages {', '.join(stages)}\n\n{table}"
    )
    _chart(fileio.join(workdir, SUMMARY_PNG), series)
    return table
