"""The results of an evaluation run: one row per dataset split (accuracy ± MIRAGE's std, searches
per question, unreadable-answer rate, format-valid rate, tokens per answer, failed questions),
their average, as `results.json` and `results.md`, a PNG bar chart, and the side-by-side comparison of several runs.

    row = summarize_split("mirage", "medqa", predictions)
    write_results(out_dir, run_info, rows)          # results.json, results.md, accuracy.png
    table = compare_runs(["results/base", "results/stage3"], out_dir="results/compare")
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

RESULTS_JSON, RESULTS_MD, CHART = "results.json", "results.md", "accuracy.png"


def summarize_split(dataset: str, split: str, predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A split's row from its predictions (`evaluation.rollouts`): accuracy = mean over questions
    of the mean over samples (a failed question counts 0); std = MIRAGE's sqrt(acc(1-acc)/n)."""
    n = len(predictions)
    samples = [s for p in predictions for s in p.get("samples", [])]
    accuracy = sum(p.get("accuracy", 0.0) for p in predictions) / n if n else 0.0
    mean = lambda values: sum(values) / len(values) if values else 0.0  # noqa: E731
    return {
        "dataset": dataset,
        "split": split,
        "n": n,
        "samples": len(samples),
        "accuracy": accuracy,
        "std": math.sqrt(accuracy * (1 - accuracy) / n) if n else 0.0,
        "searches_per_question": mean([len(s["queries"]) for s in samples]),
        "unreadable_rate": mean([not s["readable"] for s in samples]),
        "format_rate": mean([bool(s.get("format_ok")) for s in samples]),  # mc_eval has no protocol format: 0
        "tokens_per_answer": mean([s["sampled_tokens"] for s in samples]),
        "failed": sum("error" in p for p in predictions),
    }


def average_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The macro average over splits (MIRAGE's "Avg."), and the question count."""
    k = len(rows)
    mean = lambda key: sum(r[key] for r in rows) / k if k else 0.0  # noqa: E731
    return {"dataset": "average", "split": "", "n": sum(r["n"] for r in rows),
            "samples": sum(r["samples"] for r in rows),
            "accuracy": mean("accuracy"), "std": math.sqrt(sum(r["std"] ** 2 for r in rows)) / k if k else 0.0,
            "searches_per_question": mean("searches_per_question"), "unreadable_rate": mean("unreadable_rate"),
            "format_rate": sum(r.get("format_rate", 0.0) for r in rows) / k if k else 0.0,
            "tokens_per_answer": mean("tokens_per_answer"), "failed": sum(r["failed"] for r in rows)}  # fmt: skip


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table, one line per split and the average."""
    lines = [
        "| dataset | split | n | accuracy (%) | searches / question | unreadable (%) | format ok (%) | tokens / answer "
        "| failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['split']} | {r['n']} | {100 * r['accuracy']:.1f} ± {100 * r['std']:.1f} | "
            f"{r['searches_per_question']:.2f} | {100 * r['unreadable_rate']:.1f} | "
            f"{100 * r.get('format_rate', 0.0):.1f} | {r['tokens_per_answer']:.0f} | "
            f"{r['failed']} |"
        )
    return "\n".join(lines) + "\n"


def write_results(out_dir: str, run: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """results.md (the run's settings, then the table), accuracy.png and results.json ({run, rows,
    average}); returns the JSON object."""
    os.makedirs(out_dir, exist_ok=True)
    result = {"run": run, "rows": list(rows), "average": average_row(rows)}
    settings = ", ".join(f"{k} {v}" for k, v in run.items())
    with open(os.path.join(out_dir, RESULTS_MD), "w", encoding="utf-8") as fh:
        fh.write(f"{settings}\n\n" + results_table([*rows, result["average"]]))
    _chart(os.path.join(out_dir, CHART), [run.get("name", os.path.basename(out_dir.rstrip("/")))], [rows])
    # results.json last and whole (written aside, then renamed): its presence says the run is complete
    path = os.path.join(out_dir, RESULTS_JSON)
    with open(f"{path}.tmp", "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    os.replace(f"{path}.tmp", path)
    return result


def read_results(run_dir: str) -> dict[str, Any]:
    path = os.path.join(run_dir, RESULTS_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (is {run_dir} an evaluation --out_dir?)")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def compare_runs(run_dirs: Sequence[str], *, out_dir: str | None = None) -> str:
    """A markdown table with one accuracy column per run (splits as rows, then the average) and,
    with `out_dir`, `compare.md` and `compare.png` there. Splits a run lacks show "–"."""
    results = [read_results(d) for d in run_dirs]
    names = [r["run"].get("name") or os.path.basename(d.rstrip("/")) for r, d in zip(results, run_dirs)]
    keys: list[tuple[str, str]] = []
    for r in results:
        keys += [(row["dataset"], row["split"]) for row in r["rows"] if (row["dataset"], row["split"]) not in keys]
    cell = lambda row: f"{100 * row['accuracy']:.1f} ± {100 * row['std']:.1f}"  # noqa: E731
    lines = ["| dataset | split | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key in keys:
        found = [next((row for row in r["rows"] if (row["dataset"], row["split"]) == key), None) for r in results]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cell(f) if f else "–" for f in found) + " |")
    lines.append("| average | | " + " | ".join(cell(r["average"]) for r in results) + " |")
    table = "\n".join(lines) + "\n"
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "compare.md"), "w", encoding="utf-8") as fh:
            fh.write(table)
        _chart(os.path.join(out_dir, "compare.png"), names, [r["rows"] for r in results])
    return table


def _chart(path: str, names: Sequence[str], runs: Sequence[Sequence[dict[str, Any]]]) -> None:
    """Grouped bars: accuracy (%) per split, one bar per run, MIRAGE's std as error bars."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels: list[str] = []
    for rows in runs:
        labels += [r["split"] or r["dataset"] for r in rows if (r["split"] or r["dataset"]) not in labels]
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) * max(1, len(runs)) ** 0.5), 3.2), dpi=100)
    for k, (name, rows) in enumerate(zip(names, runs)):
        by = {r["split"] or r["dataset"]: r for r in rows}
        xs = [i + (k - (len(runs) - 1) / 2) * width for i, label in enumerate(labels) if label in by]
        ys = [100 * by[label]["accuracy"] for label in labels if label in by]
        es = [100 * by[label]["std"] for label in labels if label in by]
        bars = ax.bar(xs, ys, width, yerr=es, capsize=3, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=2)  # a 0 is a value, not a missing bar
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    if len(runs) > 1:
        ax.legend(fontsize="small")
    else:
        ax.set_title(names[0], fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
