"""Evaluate a policy on a medical QA benchmark: greedy answers, extracted and scored.

    python -m medr3_jax.evaluate --model smollm2_135m_instruct --dataset mirage --split all --sample
    python -m medr3_jax.evaluate --model /ckpt/hf --dataset medqa --split test --data_dir ~/tensorflow_datasets \
        --mode reason --out_dir results/

Modes: `mc_eval` (MIRAGE's JSON answer format and MIRAGE's letter extraction, comparable with
MIRAGE's numbers) and `reason` (the Med-R3 prompt without retrieval, options shown; the
`<answer>` block is matched to an option). Prints one JSON line per split: accuracy, MIRAGE's std
sqrt(acc(1-acc)/n), and how many outputs held no readable answer; `--out_dir` also writes every
prediction (`predictions_<split>.jsonl`) and the table (`results.md`, `results.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Sequence

from medr3_jax import assets
from medr3_jax.data.answers import mirage_answer, normalize_answer, option_letter, tagged_answer
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import DataError, QARecord
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.models.transformer import Decoder
from medr3_jax.sampling import GREEDY, Sampler

log = logging.getLogger("medr3_jax.evaluate")

SAMPLE_DATA_DIR = os.path.join(assets.CACHE_ROOT, "sample_tfds")


@dataclasses.dataclass(frozen=True)
class Prediction:
    id: str
    dataset: str
    output: str
    answer: str | None  # the extracted letter (or free answer for open-ended records)
    gold: str
    correct: bool
    readable: bool  # the output held an answer in the requested format


def grade(record: QARecord, output: str, mode: str) -> Prediction:
    """Extracts the answer from `output` the way `mode` asks for, and scores it."""
    if mode == "mc_eval":
        letter = mirage_answer(output)
        readable = '"answer_choice"' in output
        answer, gold = letter, record.answer
        correct = letter == record.answer
    else:
        text = tagged_answer(output)
        readable = text is not None
        if record.is_multiple_choice:
            answer, gold = (option_letter(text, record.options) if text else None), record.answer
            correct = answer == record.answer
        else:  # open-ended: exact match after normalisation (judge grading is a reward, not this)
            answer, gold = text, record.answer_text
            correct = text is not None and normalize_answer(text) == normalize_answer(record.answer_text)
    return Prediction(record.id, record.dataset, output, answer, gold, correct, readable)


def summarize(predictions: Sequence[Prediction]) -> dict[str, float | int]:
    n = len(predictions)
    acc = sum(p.correct for p in predictions) / n if n else 0.0
    return {
        "n": n,
        "accuracy": acc,
        "std": math.sqrt(acc * (1 - acc) / n) if n else 0.0,  # MIRAGE's
        "unreadable": sum(not p.readable for p in predictions),
    }


def predict(
    model: Decoder,
    tokenizer: Tokenizer,
    records: Sequence[QARecord],
    style: PromptStyle,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 512,
) -> list[Prediction]:
    """Greedy outputs for `records`, in batches of a fixed size (the last one padded with
    repeats, so one compiled shape serves every batch)."""
    sampler = Sampler(model, tokenizer, max_new_tokens=max_new_tokens)
    prompts = [tokenizer.encode(render_prompt(r, style, tokenizer)) for r in records]
    out: list[Prediction] = []
    for start in range(0, len(records), batch_size):
        chunk = prompts[start : start + batch_size]
        padded = chunk + [chunk[0]] * (batch_size - len(chunk))
        _, decoded = sampler.decode(sampler.start(padded), GREEDY)
        for i, record in enumerate(records[start : start + len(chunk)]):
            row = decoded.row(i)
            if row and row[-1] in tokenizer.stop_ids:  # the end-of-turn token is not answer text
                row = row[:-1]
            out.append(grade(record, tokenizer.decode(row, skip_special_tokens=True), style.mode))
        log.info("evaluated %d / %d", len(out), len(records))
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m medr3_jax.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2_135m_instruct", help="preset with bundled weights, HF dir or .gguf")
    p.add_argument("--dataset", default="mirage", help="a prepared dataset (see `python -m medr3_jax.data.prepare`)")
    p.add_argument("--split", action="append", default=None, help="repeatable; 'all' = every split (default: medqa)")
    p.add_argument("--data_dir", default=None, help="TFDS data dir the dataset was prepared into")
    p.add_argument("--sample", action="store_true", help="use the bundled sample set (built on first use)")
    p.add_argument("--mode", default="mc_eval", choices=["mc_eval", "reason"])
    p.add_argument("--chat", default=True, action=argparse.BooleanOptionalAction, help="use the chat template")
    p.add_argument("--show_context", action="store_true", help="show supplied contexts (PubMedQA abstracts)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N records (by id)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=512)
    p.add_argument("--param_dtype", default=None, help="float32 or bfloat16 (default: f32 on CPU, bf16 elsewhere)")
    p.add_argument("--out_dir", default=None, help="write predictions per split and the results table here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from medr3_jax.data.datasets import load_records, prepare_dataset  # noqa: PLC0415 (imports TFDS)
    from medr3_jax.models.loading import backend_overrides, load_model  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)
    args = _parse(argv)
    try:
        data_dir = args.data_dir
        if args.sample:
            data_dir = data_dir or SAMPLE_DATA_DIR
            with contextlib.redirect_stdout(sys.stderr):
                prepare_dataset(args.dataset, assets.sample_dataset_dir(args.dataset), data_dir)
        splits = args.split or ["medqa"]
        if splits == ["all"]:
            splits = dataset_splits(args.dataset, data_dir)
        records = {split: load_records(args.dataset, split, data_dir)[: args.limit] for split in splits}
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model, tokenizer = load_model(args.model, **backend_overrides(args.param_dtype))
    # `reason` grades the <answer> block against the options (`option_letter`), so it shows them.
    style = PromptStyle(mode=args.mode, chat=args.chat, question_form="choices", show_context=args.show_context)
    rows = []
    for split, split_records in records.items():
        start = time.perf_counter()
        predictions = predict(
            model, tokenizer, split_records, style, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens
        )
        row = {"model": args.model, "dataset": args.dataset, "split": split, "mode": args.mode}
        row |= summarize(predictions) | {"seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            with open(os.path.join(args.out_dir, f"predictions_{split}.jsonl"), "w", encoding="utf-8") as fh:
                for p in predictions:
                    fh.write(json.dumps(dataclasses.asdict(p), ensure_ascii=False) + "\n")
    if args.out_dir:
        with open(os.path.join(args.out_dir, "results.json"), "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
        with open(os.path.join(args.out_dir, "results.md"), "w", encoding="utf-8") as fh:
            fh.write(results_table(rows))
    return 0


def dataset_splits(dataset: str, data_dir: str | None) -> list[str]:
    """Every split of a prepared dataset, in the builder's order."""
    from medr3_jax.data.datasets import builder_splits  # noqa: PLC0415

    return builder_splits(dataset, data_dir)


def results_table(rows: Sequence[dict]) -> str:
    """A markdown table: split, n, accuracy ± MIRAGE std, unreadable outputs."""
    lines = ["| dataset | split | n | accuracy | unreadable |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['split']} | {r['n']} | {100 * r['accuracy']:.1f} ± {100 * r['std']:.1f} | {r['unreadable']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
