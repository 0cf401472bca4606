"""Build reference reasoning records for one prepared dataset split (the stage-3 graph reward's
references), resumably: interrupt it at any point and rerun the same command.

    python -m medr3_jax.data.references --dataset medqa --split train --index_dir index/medcorp \\
        --teacher_url http://vllm:8000/v1 --teacher_model deepseek-r1 \\
        --grader_url http://vllm2:8000/v1 --grader_model deepseek-v3      # extractor: the grader's

    python -m medr3_jax.data.references --dataset medqa --split train --sample \\
        --teacher_local smollm2_135m_instruct --grader_local smollm2_135m_instruct   # all local

Writes `<data_dir>/references/<dataset>-<split>.jsonl` (what training's `Experiment.references =
'auto'` reads), `…failures.jsonl` (questions left without references, with the count of each
failure reason) and `…progress.json` (what is done: the resume point). Logs progress with an
ETA; prints a JSON summary. Endpoints are OpenAI-compatible (vLLM, SGLang, a hosted API); the
key is read from `$<--api_key_env>` and never logged. `--sample` uses the bundled sample
questions (built into a cache on first use) and the bundled corpus.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from medr3_jax.cli import ArgumentParser, entry_point, error_line

log = logging.getLogger("medr3_jax.data.references.build")


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m medr3_jax.data.references", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="a prepared dataset (python -m medr3_jax.data.prepare)")
    p.add_argument("--split", default="train")
    p.add_argument("--data_dir", default=None, help="TFDS data dir the dataset was prepared into (default: TFDS's)")
    p.add_argument("--sample", action="store_true", help="the bundled sample set (and corpus, without --index_dir)")
    p.add_argument("--limit", type=int, default=None, help="the first N questions (by id)")
    p.add_argument("--out", default=None, help="output .jsonl (default: <data_dir>/references/<dataset>-<split>.jsonl)")
    p.add_argument("--restart", action="store_true", help="delete this output and its progress, then start over")
    p.add_argument("--index_dir", default=None, help="retrieval index (retrieval.embed); --sample: the bundled")
    p.add_argument("--retrieval_backend", default="exact", choices=["exact", "scann", "bm25", "fusion"])
    p.add_argument("--top_k", type=int, default=3, help="passages per search (the authors' builder: 3)")
    p.add_argument("--max_searches", type=int, default=4)
    for role, default_tokens in (("teacher", 7400), ("grader", 8192), ("extractor", 8192)):
        p.add_argument(f"--{role}_url", default=None, help=f"{role}: OpenAI-compatible base URL (…/v1)")
        p.add_argument(f"--{role}_model", default=None, help=f"{role}: model name at that URL")
        p.add_argument(f"--{role}_local", default=None, help=f"{role}: a preset, HF dir or .gguf of ours instead")
        p.add_argument(f"--{role}_max_tokens", type=int, default=default_tokens)
    p.add_argument("--teacher_api", default="chat", choices=["chat", "completions"],
                   help="chat: the authors' restart prompts; completions: continue the training prompt")  # fmt: skip
    p.add_argument("--temperature", type=float, default=0.9, help="every model's (the authors': 0.9)")
    p.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable holding the endpoints' key")
    p.add_argument("--max_concurrency", type=int, default=16, help="requests in flight per endpoint")
    p.add_argument("--timeout_s", type=float, default=600.0, help="per request")
    p.add_argument("--chains", type=int, default=10, help="references per question (the authors': 10)")
    p.add_argument("--max_attempts", type=int, default=30, help="chains written per question at most")
    p.add_argument("--min_grade", type=int, default=5, help="grader score kept (1-5; the authors keep 5)")
    p.add_argument("--batch_size", type=int, default=16, help="questions per batch (the unit of resumption)")
    return p


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # force: importing grain installs a root handler first, which would swallow our INFO lines
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as err:  # DataError, BuildError, bad knobs: one line naming it
        print(error_line(err), file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from medr3_jax.data.references.build import BuildSettings, build_references, restart  # noqa: PLC0415
    from medr3_jax.retrieval.retriever import Retriever  # noqa: PLC0415

    for role in ("teacher", "grader", "extractor"):
        if getattr(args, f"{role}_url") and getattr(args, f"{role}_local"):
            raise ValueError(f"--{role}_url and --{role}_local: give one")
    if not (args.teacher_url or args.teacher_local):
        raise ValueError("no teacher: give --teacher_url and --teacher_model, or --teacher_local")
    settings = BuildSettings(chains_per_question=args.chains, max_attempts=args.max_attempts,
                             min_grade=args.min_grade, batch_size=args.batch_size)  # fmt: skip
    records, data_dir = _records(args)
    out = args.out or os.path.join(data_dir, "references", f"{args.dataset.replace('/', '_')}-{args.split}.jsonl")
    if not out.endswith(".jsonl"):
        raise ValueError(f"--out {out}: must end in .jsonl")
    if args.restart:
        restart(out)
    models: dict[str, Any] = {}
    teacher_model = _local(args.teacher_local, models) if args.teacher_local else None
    index_dir = args.index_dir or _sample_index(args, teacher_model)
    retriever = Retriever(index_dir, backend=args.retrieval_backend)
    teacher = _teacher(args, retriever, teacher_model)
    grader = _judge(args, "grader", models) if (args.grader_url or args.grader_local) else None
    extractor = _judge(args, "extractor", models) if (args.extractor_url or args.extractor_local) else None
    if grader is None:  # the teacher's endpoint or model grades, as one server often serves both
        grader = _judge(args, "teacher", models)
    extractor = extractor or grader
    identity = {
        "dataset": args.dataset, "split": args.split, "index": retriever.manifest.corpus_sha256,
        "teacher": _name(args, "teacher"), "grader": _name(args, "grader") or _name(args, "teacher"),
        "extractor": _name(args, "extractor") or _name(args, "grader") or _name(args, "teacher"),
        "teacher_api": args.teacher_api if args.teacher_url else "rollout", "top_k": args.top_k,
        "max_searches": args.max_searches, "temperature": args.temperature,
    }  # fmt: skip
    embed = retriever.encode_queries if retriever.backend != "bm25" else None
    log.info("building %d references per question for %d questions of %s:%s into %s",
             settings.chains_per_question, len(records), args.dataset, args.split, out)  # fmt: skip
    report = build_references(
        records, teacher=teacher, grader=grader, extractor=extractor, embed=embed,
        embed_id=retriever.embedding_id if embed else None, out_path=out, settings=settings, identity=identity,
    )  # fmt: skip
    return report.as_json()


def _records(args: argparse.Namespace):
    import contextlib  # noqa: PLC0415

    import tensorflow_datasets as tfds  # noqa: PLC0415

    from medr3_jax import assets  # noqa: PLC0415
    from medr3_jax.data.datasets import load_records, prepare_dataset  # noqa: PLC0415

    data_dir = os.path.expanduser(args.data_dir or tfds.core.constants.DATA_DIR)
    if args.sample:
        with contextlib.redirect_stdout(sys.stderr):
            prepare_dataset(args.dataset, assets.sample_dataset_dir(args.dataset), data_dir)
    records = load_records(args.dataset, args.split, data_dir)
    return (records[: args.limit] if args.limit is not None else records), data_dir


def _local(spec: str, models: dict[str, Any]):
    """(model, tokenizer) of one of our checkpoints, loaded once per spec."""
    from medr3_jax.models.loading import load_model  # noqa: PLC0415

    if spec not in models:
        models[spec] = load_model(spec)
    return models[spec]


def _sample_index(args: argparse.Namespace, teacher_model) -> str:
    if not args.sample:
        raise ValueError("no --index_dir: give the retrieval index the teacher searches (or --sample)")
    from medr3_jax.models.tokenizers import byte_tokenizer  # noqa: PLC0415
    from medr3_jax.trainer.inputs import sample_index  # noqa: PLC0415

    return sample_index(teacher_model[1] if teacher_model else byte_tokenizer())


def _teacher(args: argparse.Namespace, retriever, teacher_model):
    from medr3_jax.data.references.teachers import EndpointTeacher, LocalTeacher  # noqa: PLC0415

    if teacher_model is not None:
        model, tokenizer = teacher_model
        return LocalTeacher(model, tokenizer, retriever, top_k=args.top_k, max_searches=args.max_searches,
                            max_tokens=args.teacher_max_tokens, temperature=args.temperature)  # fmt: skip
    client = _endpoint(args, "teacher", api=args.teacher_api)
    return EndpointTeacher(client, retriever, top_k=args.top_k, max_searches=args.max_searches,
                           max_tokens=args.teacher_max_tokens, workers=args.max_concurrency)  # fmt: skip


def _judge(args: argparse.Namespace, role: str, models: dict[str, Any]):
    from medr3_jax.rewards.judge import LocalJudge  # noqa: PLC0415

    spec = getattr(args, f"{role}_local")
    if spec:
        model, tokenizer = _local(spec, models)
        return LocalJudge(model, tokenizer, max_new_tokens=min(getattr(args, f"{role}_max_tokens"), 1024))
    return _endpoint(args, role, api="chat")


def _endpoint(args: argparse.Namespace, role: str, *, api: str):
    from medr3_jax.rewards.judge import HTTPJudge  # noqa: PLC0415

    url, model = getattr(args, f"{role}_url"), getattr(args, f"{role}_model")
    if not model:
        raise ValueError(f"--{role}_url {url}: give --{role}_model too")
    return HTTPJudge(url, model, api=api, api_key_env=args.api_key_env, max_concurrency=args.max_concurrency,
                     timeout_s=args.timeout_s, temperature=args.temperature, top_p=1.0,
                     max_tokens=getattr(args, f"{role}_max_tokens"))  # fmt: skip


def _name(args: argparse.Namespace, role: str) -> str | None:
    """A model's identity for the resume check: its name at the endpoint (not the URL, which may
    move) or its local spec."""
    return getattr(args, f"{role}_model") if getattr(args, f"{role}_url") else getattr(args, f"{role}_local")


if __name__ == "__main__":
    sys.exit(main())
