"""Learning benchmark on a real model: SmolLM2-135M-Instruct through stage 1 (reasoning) and
stage 3 (reasoning with retrieval over the bundled corpus), a run with lr > 0 against an lr = 0
control in the same invocation. Prints JSON (and writes it with --out); a PNG of the curves
goes next to it.

    .venv/bin/python bench/learning.py --size cpu --out bench/results/cpu_learning_smollm2.json
    python bench/learning.py --size gpu --out bench/results/h100_learning_smollm2.json   # one GPU, <= 5 min

Every run goes through `python -m medr3_jax.train` (progressive.gin, the stage files' rewards):
  1. a shared cold start (stage 0: supervised steps on the bundled reference chains). SmolLM2
     never writes the protocol's tags at temperature 1 from the base weights, so every row of a
     group would score the same, the advantages would be 0 and neither arm would move; both arms
     start from this one checkpoint.
  2. arm `learn` (OptimizerConfig.learning_rate = --lr) and arm `control` (lr = 0: the same
     rollouts, rewards and updates with a step of zero; its weights never change), each
     stage 1 then stage 3, with the same seeds, so both see the same questions in the same order
     and their step-0 rollouts are identical.

Reward per step: the mean over the step's rows (`reward/total` in TensorBoard). Held-out
accuracy: the MIRAGE sample questions (held out from the training splits), greedy, every
`eval_every` steps for `learn`, before and after for `control` (its weights are the start's).

Verdict per stage: the mean reward of the last `tail` steps, learn minus control, against the
control's own step-to-step spread (the standard deviation of its per-step rewards): the issue's
bar is a margin larger than that spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from machine import describe  # noqa: E402  (bench/machine.py: scripts run with bench/ on sys.path)

from medr3_jax.trainer.metrics import read_scalars  # noqa: E402
from medr3_jax.trainer.summary import run_series  # noqa: E402

STAGES = ("stage1", "stage3")
TAGS = ("reward/total", "reward/format_ok", "reward/answer", "rollout/searches_per_row", "loss/total",
        "loss/clip_fraction", "perf/step_seconds")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Size:
    """One size of the benchmark: steps, rows and evaluation cadence."""

    cold_steps: int  # stage 0 supervised steps (the shared cold start)
    cold_rows: int  # reference chains per cold-start step
    stage1_steps: int
    stage3_steps: int
    prompts: int  # questions per RL step (x group_size rows)
    group_size: int
    max_response_tokens: int
    eval_every: int  # learn arm; the control is evaluated before and after each stage
    eval_questions: int  # per MIRAGE split
    tail: int  # steps averaged for the verdict
    timeout_s: int  # per train subprocess
    lr: float  # the learn arm's learning rate (default of --lr)


SIZES = {
    # 2 CPU cores: about a minute per step at 8 rows x 192 tokens (the update dominates). lr 1e-4
    # wrecked the text within 3 stage-1 steps (format-valid rate 0.5 -> 0.125, reward -0.375).
    "cpu": Size(cold_steps=8, cold_rows=2, stage1_steps=8, stage3_steps=4, prompts=2, group_size=4,
                max_response_tokens=192, eval_every=4, eval_questions=2, tail=3, timeout_s=2400, lr=2e-5),
    # one H100/H200: 64 rows per step, evaluated every 5 steps
    "gpu": Size(cold_steps=8, cold_rows=4, stage1_steps=15, stage3_steps=10, prompts=8, group_size=8,
                max_response_tokens=256, eval_every=5, eval_questions=10, tail=5, timeout_s=600, lr=2e-5),
}  # fmt: skip


def train(workdir: str, bindings: list[str], timeout_s: int, log_path: str) -> float:
    """Runs `python -m medr3_jax.train --gin_file=gin/progressive.gin` with `bindings` under
    `workdir`; returns its wall seconds. A failure raises with the log's path and its tail."""
    cmd = [sys.executable, "-m", "medr3_jax.train", "--gin_file=gin/progressive.gin", f"--workdir={workdir}"]
    cmd += [f"--gin_param={b}" for b in bindings]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=timeout_s, check=False)  # fmt: skip
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8") as fh:
            tail = fh.read()[-3000:]
        raise RuntimeError(f"train exited {proc.returncode} (log {log_path}):\n{tail}")
    return time.perf_counter() - start


def cold_start_bindings(size: Size) -> list[str]:
    """Stage 0 as `make demo` runs it (gin/demo.gin), sized by `size`, no evaluation."""
    return [
        "run.stages = ['stage0']",
        f"stage0/Experiment.num_steps = {size.cold_steps}",
        f"stage0/Experiment.prompts_per_step = {size.cold_rows}",
        "stage0/Experiment.prompt_buckets = (512, 640)",
        "stage0/UpdateConfig.micro_batch = None",
        "stage0/OptimizerConfig.learning_rate = 2e-4",
        "Experiment.eval_every = 0",
    ]


def arm_bindings(size: Size, lr: float, cold_checkpoints: str, *, control: bool) -> list[str]:
    """Stage 1 then stage 3 from the cold start; the control evaluates before and after only."""
    out = [
        "run.stages = ['stage1', 'stage3']",
        f"stage1/Experiment.init_from = '{cold_checkpoints}'",
        f"Experiment.prompts_per_step = {size.prompts}",
        f"RolloutConfig.group_size = {size.group_size}",
        f"RolloutConfig.max_response_tokens = {size.max_response_tokens}",
        f"OptimizerConfig.learning_rate = {lr!r}",
        f"UpdateConfig.micro_batch = {size.group_size}",
        f"Experiment.eval_questions = {size.eval_questions}",
        "stage3/Experiment.eval_before_train = False",  # stage 1's last evaluation is stage 3's start
        "CheckpointConfig.every_steps = 1000",  # the final checkpoint only (and the evaluated steps)
    ]
    for stage, steps in (("stage1", size.stage1_steps), ("stage3", size.stage3_steps)):
        out += [f"{stage}/Experiment.num_steps = {steps}",
                f"{stage}/Experiment.eval_every = {steps if control else size.eval_every}"]  # fmt: skip
    return out


def arm_series(workdir: str) -> dict[str, dict[str, list[list[float]]]]:
    """stage -> tag -> [[step, value], ...]: the training scalars of `TAGS` and the held-out
    evaluation (eval accuracy and format-valid rate, from each eval step's results.json)."""
    out: dict[str, dict[str, list[list[float]]]] = {}
    evaluations = run_series(workdir, STAGES)
    for stage in STAGES:
        scalars = read_scalars(os.path.join(workdir, stage, "tb"))
        out[stage] = {tag: [[step, value] for step, value in scalars.get(tag, [])] for tag in TAGS}
        for key in ("accuracy", "format_rate"):
            out[stage][f"eval/{key}"] = [[step, value] for s, step, value in evaluations[key] if s == stage]
    return out


def verdict(learn: list[list[float]], control: list[list[float]], tail: int) -> dict[str, float | bool]:
    """Mean reward of the last `tail` steps, learn - control, vs the control's step-to-step
    spread (population standard deviation of its per-step rewards)."""
    lv, cv = np.array([v for _, v in learn]), np.array([v for _, v in control])
    margin = float(lv[-tail:].mean() - cv[-tail:].mean())
    spread = float(cv.std())
    return {"learn_tail_mean": float(lv[-tail:].mean()), "control_tail_mean": float(cv[-tail:].mean()),
            "margin": margin, "control_spread": spread, "learn_first": float(lv[0]), "control_first": float(cv[0]),
            "paired_step0_equal": bool(abs(lv[0] - cv[0]) < 1e-6), "margin_exceeds_spread": margin > spread}  # fmt: skip


def chart(path: str, arms: dict[str, dict], title: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = [("reward/total", "training reward (mean of the step)"),
              ("reward/format_ok", "training format-valid rate"), ("eval/accuracy", "held-out accuracy")]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    offset = {"stage1": 0, "stage3": max(s for s, _ in arms["learn"]["stage1"]["reward/total"]) + 1}
    for ax, (tag, label) in zip(axes[0], panels):
        for arm, style in (("learn", "-o"), ("control", "--s")):
            for stage in STAGES:
                points = arms[arm][stage][tag]
                xs = [offset[stage] + s for s, _ in points]
                ax.plot(xs, [v for _, v in points], style, color="C0" if stage == "stage1" else "C1",
                        label=f"{arm} {stage}", markersize=4)  # fmt: skip
        ax.axvline(offset["stage3"] - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step (stage 1, then stage 3)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument(
        "--lr", type=float, default=None, help="the learn arm's learning rate (default: the size's; the control's is 0)"
    )
    p.add_argument("--workdir", default=None, help="where the runs go (default: a temporary directory)")
    p.add_argument("--out", default=None, help="JSON path; the PNG is written beside it")
    args = p.parse_args()
    size = SIZES[args.size]
    args.lr = size.lr if args.lr is None else args.lr
    root = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="medr3_learning_"))
    os.makedirs(root, exist_ok=True)
    say = lambda msg: print(f"[learning] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    result: dict[str, object] = {"benchmark": "learning", "model": "smollm2_135m_instruct", "size": args.size,
                                 "config": dataclasses.asdict(size), "lr": args.lr, "machine": describe(jax=True),
                                 "workdir": os.path.abspath(root)}  # fmt: skip
    seconds = {}
    cold = os.path.join(root, "cold_start")
    say(f"cold start: {size.cold_steps} supervised steps into {cold}")
    seconds["cold_start"] = train(cold, cold_start_bindings(size), size.timeout_s, os.path.join(root, "cold_start.log"))
    cold_checkpoints = os.path.join(cold, "stage0", "checkpoints")
    arms = {}
    for arm, lr in (("learn", args.lr), ("control", 0.0)):
        workdir = os.path.join(root, arm)
        say(f"arm {arm} (lr {lr:g}): stage 1 x {size.stage1_steps}, stage 3 x {size.stage3_steps} steps into {workdir}")
        seconds[arm] = train(workdir, arm_bindings(size, lr, cold_checkpoints, control=arm == "control"),
                             size.timeout_s, os.path.join(root, f"{arm}.log"))  # fmt: skip
        arms[arm] = arm_series(workdir)
        say(f"arm {arm}: {seconds[arm]:.0f} s")
    result["seconds"] = seconds
    result["arms"] = arms
    result["verdict"] = {stage: verdict(arms["learn"][stage]["reward/total"], arms["control"][stage]["reward/total"],
                                        size.tail) for stage in STAGES}  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        png = os.path.splitext(args.out)[0] + ".png"
        dev = result["machine"]
        chart(png, arms, f"SmolLM2-135M, lr {args.lr:g} vs 0 ({args.size}: {dev['devices'][0]}, {dev['cpu']})")
        say(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
