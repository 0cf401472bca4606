"""Evaluation on the training rollout path: the same `RolloutEngine`, protocol, prompt and
question form as training, retrieval on (any backend) or off; greedy, or the authors'
validation sampling (T 0.6, top_p 0.9, 4 samples per question, `myverl/med_R3_grpo.sh` in
GitHub 8023looker/Med-R3), accuracy averaged over samples.

    engine = RolloutEngine(sampler, retriever, RolloutConfig(group_size=settings.samples, ...), protocol)
    results = evaluate_records(engine, records, style, settings, predictions_path="out/predictions_medqa.jsonl")

A sample is correct when its `<answer>` earns the rubric's top grade by rules (`rewards.answer.
rule_grade`: the gold option's text, or its letter when the letters were shown; the gold text for
open-ended records). Predictions are appended to `predictions_path` one question per line as each
batch finishes; a rerun reads the finished ids and evaluates only the rest (a line cut short by a
kill is dropped and redone). A batch that fails (a sampler or retriever fault) is logged, its
questions are recorded as failed with the error, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Sequence

import numpy as np

from medr3_jax.config_types import check_field_types
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord
from medr3_jax.progress import Progress
from medr3_jax.protocol import ANSWER_OPEN, Protocol
from medr3_jax.rewards.answer import Grade, rule_grade
from medr3_jax.rollout import Rollout, RolloutEngine
from medr3_jax.sampling import SamplingParams, StopReason

log = logging.getLogger(__name__)

GREEDY_SETTINGS = {"temperature": 0.0, "top_p": 1.0, "samples": 1}
AUTHORS_VALIDATION = {"temperature": 0.6, "top_p": 0.9, "samples": 4}  # val_kwargs in med_R3_grpo.sh


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """samples: answers per question (the rollout's group size); temperature/top_p: sampling (0 =
    greedy); batch_size: questions per rollout call (a short last batch is padded with repeats,
    so one compiled shape serves every batch); seed: the sampling seed of batch 0 (batch b
    uses seed + b, so a resumed run samples what a straight run samples)."""

    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.samples < 1 or self.batch_size < 1:
            raise ValueError(f"EvalSettings: samples ({self.samples}) and batch_size ({self.batch_size}) must be >= 1")
        if self.temperature == 0.0 and self.samples > 1:
            raise ValueError(f"EvalSettings: {self.samples} greedy samples would be identical; set temperature > 0")

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One answer to one question, with its trajectory."""

    text: str  # the assistant text (prompt's prefix + response), documents included
    answer: str  # the `<answer>` text ("" when there is none)
    grade: int  # Grade by rules
    correct: bool
    readable: bool  # an `<answer>` block was there
    format_ok: bool  # the whole text is well formed under the protocol (its format reward's grammar)
    queries: list[str]
    retrieved_ids: list[str]
    response_tokens: int  # sampled + inserted
    sampled_tokens: int
    stop: str
    flags: list[str]


def grade_sample(record: QARecord, text: str, protocol: Protocol, *, letters_shown: bool) -> tuple[str, Grade, bool]:
    """(answer, grade, readable) of one assistant text under `protocol`; an answer is readable
    when the text has a non-empty `<answer>` block (the grammar's split would otherwise fall
    back to the text after the think block)."""
    answer = protocol.think_and_answer(text)[1] if ANSWER_OPEN in text else ""
    if not answer:
        return "", Grade.WRONG, False
    return answer, rule_grade(answer, record, letters_shown=letters_shown), True


def evaluate_records(
    engine: RolloutEngine,
    records: Sequence[QARecord],
    style: PromptStyle,
    settings: EvalSettings,
    *,
    predictions_path: str | None = None,
    write: bool = True,
) -> list[dict[str, Any]]:
    """One prediction dict per record (in `records` order): id, dataset, gold, samples, accuracy
    (mean over samples), or `error` for a question whose batch failed. `write=False` on all but
    the primary process (every process runs the same rows)."""
    if engine.config.group_size != settings.samples:
        raise ValueError(f"the engine's group_size {engine.config.group_size} != samples {settings.samples}")
    batches = [list(records[s : s + settings.batch_size]) for s in range(0, len(records), settings.batch_size)]
    done = _finished_batches(predictions_path, batches, cut=write) if predictions_path else {}
    start = sum(all(r.id in done for r in batch) for batch in batches)
    if start:
        log.info("resuming: %d of %d questions already in %s", len(done), len(records), predictions_path)
    tokenizer = engine.tokenizer
    started = time.monotonic()
    with Progress(f"evaluating {len(records)} questions", len(records), "questions") as bar:
        bar.update(len(done))
        for b in range(start, len(batches)):
            batch = batches[b]
            prompts = [
                tokenizer.encode(
                    render_prompt(
                        r, style, tokenizer, protocol=engine.protocol, max_searches=engine.config.max_searches
                    )
                )
                for r in batch
            ]
            # a short last batch is filled with repeats of its first prompt (their rows are dropped),
            # so every batch has the rollout shapes of the first: no compile for the remainder
            prompts += [prompts[0]] * (settings.batch_size - len(prompts))
            try:
                rollout = engine.run(prompts, params=settings.params, seed=settings.seed + b)
                rows = [_prediction(r, rollout, i, settings.samples, engine.protocol, style, engine.config.retrieval)
                        for i, r in enumerate(batch)]  # fmt: skip
            except Exception as err:  # noqa: BLE001 -- a faulty batch is recorded and named, the run goes on
                log.error("batch of %s failed (%s: %s); its questions are recorded as failed",
                          [r.id for r in batch], type(err).__name__, err)  # fmt: skip
                rows = [_base(r) | {"error": f"{type(err).__name__}: {err}"} for r in batch]
            if predictions_path and write:
                _append(predictions_path, rows)
            for row in rows:
                done[row["id"]] = row
            bar.update(len(rows))
            rate = (b + 1 - start) / max(time.monotonic() - started, 1e-9)  # batches per second
            log.info("evaluated %d / %d questions (batch %d of %d, ETA %.0f s)", len(done), len(records), b + 1,
                     len(batches), (len(batches) - b - 1) / rate)  # fmt: skip
    return [done[r.id] for r in records]


def _finished_batches(path: str, batches: list[list[QARecord]], *, cut: bool) -> dict[str, dict[str, Any]]:
    """The predictions of the leading batches the file holds whole; with `cut` (the writing
    process only) the file is cut back to them (a run killed mid-batch, or mid-line, leaves a
    partial batch that is redone)."""
    rows = read_predictions(path)
    done: dict[str, dict[str, Any]] = {}
    keep = 0
    for batch in batches:
        if not all(r.id in rows for r in batch):
            break
        for r in batch:
            done[r.id] = rows[r.id][0]
            keep = max(keep, rows[r.id][1])
    if cut and os.path.exists(path) and os.path.getsize(path) != keep:
        log.warning("%s: cutting %d bytes of an unfinished batch", path, os.path.getsize(path) - keep)
        with open(path, "r+b") as fh:
            fh.truncate(keep)
    return done


def _base(record: QARecord) -> dict[str, Any]:
    gold = record.answer_text if not record.is_multiple_choice else f"{record.answer}. {record.options[record.answer]}"
    return {"id": record.id, "dataset": record.dataset, "gold": gold}


def _prediction(record: QARecord, rollout: Rollout, index: int, n: int, protocol: Protocol,
                style: PromptStyle, retrieval: bool) -> dict[str, Any]:  # fmt: skip
    samples = []
    for row in range(index * n, (index + 1) * n):
        text = rollout.prefixes[row] + rollout.texts[row]
        answer, grade, readable = grade_sample(record, text, protocol, letters_shown=style.question_form == "choices")
        sampled = int(rollout.loss_mask[row].sum())
        samples.append(Sample(text=text, answer=answer, grade=int(grade), correct=grade == Grade.SAME,
                              readable=readable, format_ok=protocol.format_score(text, retrieval=retrieval) == 1.0,
                              queries=list(rollout.queries[row]),
                              retrieved_ids=list(rollout.retrieved_ids[row]),
                              response_tokens=int(rollout.response_lengths[row]), sampled_tokens=sampled,
                              stop=_stop_name(int(rollout.stop_reasons[row])),
                              flags=sorted(rollout.flags[row])))  # fmt: skip
    accuracy = float(np.mean([s.correct for s in samples]))
    return _base(record) | {"accuracy": accuracy, "samples": [dataclasses.asdict(s) for s in samples]}


def _stop_name(reason: int) -> str:
    return StopReason(reason).name.lower()


def read_predictions(path: str) -> dict[str, tuple[dict[str, Any], int]]:
    """id -> (prediction, byte offset of the end of its line) of a predictions file, up to its
    last whole line."""
    if not os.path.exists(path):
        return {}
    out: dict[str, tuple[dict[str, Any], int]] = {}
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                break
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not JSON ({err.msg}); move the file away") from None
            offset += len(raw)
            out[row["id"]] = (row, offset)
    return out


def _append(path: str, rows: list[dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        fh.flush()
        os.fsync(fh.fileno())
