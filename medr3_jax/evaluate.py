"""Evaluate a policy on medical QA benchmarks the way the paper reports it, and compare runs.

    python -m medr3_jax.evaluate --checkpoint runs/demo --dataset mirage --split all --sample \
        --retrieval exact --out_dir results/demo                       # the trained agent, searching
    python -m medr3_jax.evaluate --model /ckpt/Qwen2.5-7B --dataset medqa --split test --retrieval off \
        --sampling authors --out_dir results/base                       # T 0.6, top_p 0.9, 4 samples
    python -m medr3_jax.evaluate compare results/base results/demo --out_dir results/compare

Mode `rollout` (the default) runs the training rollout path (`evaluation.rollouts`: the same
`RolloutEngine`, protocol, prompt and question form as training; retrieval on with any backend,
or off), greedy or with the authors' validation sampling; a sample is correct when its answer
earns the rubric's top grade by rules. Mode `mc_eval` is MIRAGE's JSON answer format and letter
extraction, for comparison with MIRAGE's numbers. `--checkpoint` takes a training checkpoint
(an Orbax directory, one step, a stage workdir, or a training workdir: its latest stage),
`--model` a preset, HF directory or .gguf. Prints one JSON line per split; `--out_dir` gets
`predictions_<dataset>_<split>.jsonl` (every sample's text, answer, searches and retrieved
passage ids; appended per batch: a rerun skips finished questions), `results.json`,
`results.md` and `accuracy.png` (docs/DATA.md, "Evaluate"). On several hosts every process runs
the same command (a TPU pod finds its peers; elsewhere add --coordinator_address, --num_processes
and --process_id, as for training): the rows are split over the whole mesh, process 0 writes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

from jax.sharding import Mesh

from medr3_jax import assets
from medr3_jax.cli import ArgumentParser, entry_point, error_line
from medr3_jax.data.answers import mirage_answer
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import DataError, QARecord
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.models.transformer import Decoder
from medr3_jax.sampling import GREEDY, Sampler
from medr3_jax.sharding import add_process_flags, initialize_from, is_primary, sync

log = logging.getLogger("medr3_jax.evaluate")

SAMPLE_DATA_DIR = os.path.join(assets.CACHE_ROOT, "sample_tfds")
RUN_FILE = "run.json"


# ---- mc_eval: MIRAGE's prompt and letter extraction -------------------------------------------
@dataclasses.dataclass(frozen=True)
class Prediction:
    id: str
    dataset: str
    output: str
    answer: str | None  # the extracted letter
    gold: str
    correct: bool
    readable: bool  # the output held MIRAGE's "answer_choice" field
    tokens: int = 0  # sampled tokens

    def as_prediction(self) -> dict[str, Any]:
        """The common predictions line (`evaluation.rollouts`): one sample, no searches."""
        sample = {"text": self.output, "answer": self.answer or "", "correct": self.correct, "readable": self.readable,
                  "queries": [], "retrieved_ids": [], "sampled_tokens": self.tokens}  # fmt: skip
        return {"id": self.id, "dataset": self.dataset, "gold": self.gold, "accuracy": float(self.correct),
                "samples": [sample]}  # fmt: skip


def grade(record: QARecord, output: str, tokens: int = 0) -> Prediction:
    """MIRAGE's letter from an mc_eval output, and whether it is the gold."""
    letter = mirage_answer(output)
    readable = '"answer_choice"' in output
    correct = letter == record.answer
    return Prediction(record.id, record.dataset, output, letter, record.answer, correct, readable, tokens)


def predict(
    model: Decoder,
    tokenizer: Tokenizer,
    records: Sequence[QARecord],
    style: PromptStyle,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    mesh: Mesh | None = None,
) -> list[Prediction]:
    """Greedy mc_eval outputs for `records`, in batches of a fixed size (the last one padded with
    repeats, so one compiled shape serves every batch), their rows split over `mesh`."""
    sampler = Sampler(model, tokenizer, max_new_tokens=max_new_tokens, mesh=mesh)
    prompts = [tokenizer.encode(render_prompt(r, style, tokenizer)) for r in records]
    out: list[Prediction] = []
    for start in range(0, len(records), batch_size):
        chunk = prompts[start : start + batch_size]
        padded = chunk + [chunk[0]] * (batch_size - len(chunk))
        _, decoded = sampler.decode(sampler.start(padded), GREEDY)
        for i, record in enumerate(records[start : start + len(chunk)]):
            row = decoded.row(i)
            tokens = len(row)
            if row and row[-1] in tokenizer.stop_ids:  # the end-of-turn token is not answer text
                row = row[:-1]
            out.append(grade(record, tokenizer.decode(row, skip_special_tokens=True), tokens))
        log.info("evaluated %d / %d", len(out), len(records))
    return out


# ---- the CLI ---------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m medr3_jax.evaluate", description=__doc__.split("\n")[0])
    policy = p.add_mutually_exclusive_group()
    policy.add_argument("--model", default=None, help="preset with bundled weights, HF dir or .gguf "
                        "(default: smollm2_135m_instruct)")  # fmt: skip
    policy.add_argument("--checkpoint", default=None, help="training checkpoint dir, step dir, stage or run workdir")
    p.add_argument("--dataset", default="mirage", help="a prepared dataset (see `python -m medr3_jax.data.prepare`)")
    p.add_argument("--split", action="append", default=None, help="repeatable; 'all' = every split (default: medqa)")
    p.add_argument("--data_dir", default=None, help="TFDS data dir the dataset was prepared into")
    p.add_argument("--sample", action="store_true", help="use the bundled sample set (built on first use)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N records (by id) of each split")
    p.add_argument("--mode", default="rollout", choices=["rollout", "mc_eval"])
    p.add_argument("--retrieval", default="exact", choices=["off", "exact", "scann", "bm25", "fusion"],
                   help="rollout mode: search while reasoning with this backend, or off")  # fmt: skip
    p.add_argument("--index_dir", default=None, help="retrieval index (default: the bundled sample corpus)")
    p.add_argument("--protocol", default="med_r3", choices=["med_r3", "search_r1"])
    p.add_argument("--question_form", default="open", choices=["open", "choices"],
                   help="open: the authors' (no options shown); choices: lettered options")  # fmt: skip
    p.add_argument("--chat", default=None, action=argparse.BooleanOptionalAction,
                   help="use the chat template (default: when the tokenizer has one)")  # fmt: skip
    p.add_argument("--show_context", action="store_true", help="show supplied contexts (PubMedQA abstracts)")
    p.add_argument("--sampling", default="greedy", choices=["greedy", "authors"],
                   help="greedy, or the authors' validation sampling (T 0.6, top_p 0.9, 4 samples)")  # fmt: skip
    p.add_argument("--samples", type=int, default=None, help="override the samples per question")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top_p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=8, help="questions per rollout")
    p.add_argument("--max_new_tokens", type=int, default=512, help="response cap (sampled + inserted tokens)")
    p.add_argument("--max_searches", type=int, default=4)
    p.add_argument("--top_k", type=int, default=5, help="passages per search")
    p.add_argument("--mesh", default="data=1,fsdp=-1,tensor=1", help="device mesh, as in training")
    p.add_argument("--param_dtype", default=None, help="float32 or bfloat16 (default: f32 on CPU, bf16 elsewhere)")
    p.add_argument("--name", default=None, help="the run's name in tables and charts")
    p.add_argument("--out_dir", default=None, help="predictions, results.json/md and accuracy.png go here")
    add_process_flags(p)
    args = p.parse_args(argv)
    return args


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # force: importing grain installs a root handler first, which would swallow our INFO lines
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    for noisy in ("jax", "absl", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv[:1] == ["compare"]:
        return _compare(argv[1:])
    args = _parse(argv)
    initialize_from(args)  # every process runs this program: the batch rows are split over the mesh
    try:
        records = _records(args)
        return _run(args, records)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(error_line(err), file=sys.stderr)
        return 2


def _records(args: argparse.Namespace) -> dict[str, list[QARecord]]:
    from medr3_jax.data.datasets import load_records, prepare_dataset  # noqa: PLC0415 (imports TFDS)

    data_dir = args.data_dir
    if args.sample:
        data_dir = data_dir or SAMPLE_DATA_DIR
        if is_primary():  # one writer into the shared cache; the others wait for it
            with contextlib.redirect_stdout(sys.stderr):
                prepare_dataset(args.dataset, assets.sample_dataset_dir(args.dataset), data_dir)
        sync("sample data")
    splits = args.split or ["medqa"]
    if splits == ["all"]:
        splits = dataset_splits(args.dataset, data_dir)
    return {split: load_records(args.dataset, split, data_dir)[: args.limit] for split in splits}


def _settings(args: argparse.Namespace):
    from medr3_jax.evaluation.rollouts import AUTHORS_VALIDATION, GREEDY_SETTINGS, EvalSettings  # noqa: PLC0415

    base = dict(AUTHORS_VALIDATION if args.sampling == "authors" else GREEDY_SETTINGS)
    for key in ("samples", "temperature", "top_p"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    return EvalSettings(batch_size=args.batch_size, seed=args.seed, **base)


def _run(args: argparse.Namespace, records: dict[str, list[QARecord]]) -> int:
    from medr3_jax.evaluation.report import summarize_split, write_results  # noqa: PLC0415
    from medr3_jax.evaluation.rollouts import evaluate_records  # noqa: PLC0415
    from medr3_jax.models.loading import backend_overrides  # noqa: PLC0415
    from medr3_jax.sharding import make_mesh, param_shardings  # noqa: PLC0415
    from medr3_jax.trainer.policies import load_policy  # noqa: PLC0415

    settings = _settings(args) if args.mode == "rollout" else None
    mesh = make_mesh(args.mesh)
    model_name = args.model or (None if args.checkpoint else "smollm2_135m_instruct")
    model, tokenizer, source = load_policy(model=model_name, checkpoint=args.checkpoint,
                                           shardings=lambda c: param_shardings(c, mesh),
                                           **backend_overrides(args.param_dtype))  # fmt: skip
    if args.chat is None:
        args.chat = tokenizer.chat_template is not None
    run = _run_info(args, source, settings)
    if args.out_dir:
        _check_run(args.out_dir, run)
    engine = _engine(args, model, tokenizer, mesh, settings) if settings else None
    rows = []
    for split, split_records in records.items():
        start = time.perf_counter()
        name = f"predictions_{args.dataset.replace('/', '_')}_{split}.jsonl"
        path = os.path.join(args.out_dir, name) if args.out_dir else None
        if engine is not None:
            style = PromptStyle(mode="search" if args.retrieval != "off" else "reason", chat=args.chat,
                                question_form=args.question_form, show_context=args.show_context)  # fmt: skip
            predictions = evaluate_records(engine, split_records, style, settings, predictions_path=path,
                                           write=is_primary())  # fmt: skip
        else:
            style = PromptStyle(mode="mc_eval", chat=args.chat, show_context=args.show_context)
            predictions = [p.as_prediction() for p in predict(model, tokenizer, split_records, style,
                                                              batch_size=args.batch_size,
                                                              max_new_tokens=args.max_new_tokens,
                                                              mesh=mesh)]  # fmt: skip
            if path and is_primary():
                os.makedirs(args.out_dir, exist_ok=True)
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
        row = summarize_split(args.dataset, split, predictions) | {"seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out_dir and is_primary():
        write_results(args.out_dir, run, rows)
    return 0


def _engine(args: argparse.Namespace, model: Decoder, tokenizer: Tokenizer, mesh, settings):
    from medr3_jax.protocol import get_protocol  # noqa: PLC0415
    from medr3_jax.rollout import RolloutConfig, RolloutEngine  # noqa: PLC0415

    protocol = get_protocol(args.protocol, "--protocol")
    retrieval = args.retrieval != "off"
    retriever = None
    if retrieval:
        from medr3_jax.retrieval.retriever import Retriever  # noqa: PLC0415
        from medr3_jax.trainer.inputs import sample_index  # noqa: PLC0415

        retriever = Retriever(args.index_dir or sample_index(tokenizer), backend=args.retrieval, mesh=mesh)
    sampler = Sampler(model, tokenizer, stop_strings=protocol.stop_strings(retrieval=retrieval),
                      max_new_tokens=args.max_new_tokens, mesh=mesh)  # fmt: skip
    config = RolloutConfig(group_size=settings.samples, max_searches=args.max_searches, top_k=args.top_k,
                           max_response_tokens=args.max_new_tokens, retrieval=retrieval, decode_segment=64,
                           sequence_bucket=64)  # fmt: skip
    return RolloutEngine(sampler, retriever, config, protocol)


def _run_info(args: argparse.Namespace, source: dict[str, Any], settings) -> dict[str, Any]:
    """What the run is (its name, policy and every setting that changes its predictions)."""
    info = {"name": args.name or source["name"], **{k: v for k, v in source.items() if k != "name"}}
    info |= {"dataset": args.dataset, "mode": args.mode, "chat": args.chat, "max_new_tokens": args.max_new_tokens}
    if settings is not None:
        info |= {"retrieval": args.retrieval, "protocol": args.protocol, "question_form": args.question_form,
                 "samples": settings.samples, "temperature": settings.temperature, "top_p": settings.top_p,
                 "seed": settings.seed, "batch_size": settings.batch_size, "max_searches": args.max_searches,
                 "top_k": args.top_k,
                 "index": args.index_dir or ("sample" if args.retrieval != "off" else None)}  # fmt: skip
    return info


def _check_run(out_dir: str, run: dict[str, Any]) -> None:
    """Records the run in `out_dir/run.json`; a rerun into the same folder must be the same run
    (its predictions are resumed), else an error names what differs."""
    path = os.path.join(out_dir, RUN_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            before = json.load(fh)
        differs = sorted(k for k in set(before) | set(run) if k != "name" and before.get(k) != run.get(k))
        if differs:
            detail = "; ".join(f"{k}: {before.get(k)!r} then, {run.get(k)!r} now" for k in differs)
            raise ValueError(f"{out_dir} holds another run's predictions ({detail}); use another --out_dir")
        return
    sync("evaluation run checked")  # every process has read run.json before process 0 writes it
    if is_primary():
        os.makedirs(out_dir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(run, fh, indent=1)


def _compare(argv: Sequence[str]) -> int:
    from medr3_jax.evaluation.report import compare_runs  # noqa: PLC0415

    p = ArgumentParser(prog="python -m medr3_jax.evaluate compare",
                                description="Put several evaluation runs side by side (table + chart).")  # fmt: skip
    p.add_argument("run_dirs", nargs="+", help="--out_dir folders of evaluation runs")
    p.add_argument("--out_dir", default=None, help="also write compare.md and compare.png here")
    args = p.parse_args(argv)
    try:
        print(compare_runs(args.run_dirs, out_dir=args.out_dir), end="")
    except FileNotFoundError as err:
        print(error_line(err), file=sys.stderr)
        return 2
    return 0


def dataset_splits(dataset: str, data_dir: str | None) -> list[str]:
    """Every split of a prepared dataset, in the builder's order."""
    from medr3_jax.data.datasets import builder_splits  # noqa: PLC0415

    return builder_splits(dataset, data_dir)


if __name__ == "__main__":
    sys.exit(main())
