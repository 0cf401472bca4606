"""What a stage reads before its first step, built from its `Experiment`: the questions of each
split, the retriever (the bundled sample index built once into the cache), the reference records
of the graph term, the checkpoint a fresh stage starts from, and the periodic evaluation."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import sys
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from medr3_jax import assets, fileio
from medr3_jax import protocol as P
from medr3_jax.data.records import QARecord
from medr3_jax.data.references import REFERENCES_DIR, Reference, ReferenceStats, read_references
from medr3_jax.models.loading import backend_overrides, load_model
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.rewards import Judge, JudgeStats
from medr3_jax.rollout import RolloutEngine
from medr3_jax.sampling import Sampler
from medr3_jax.sharding import is_primary, make_mesh, param_shardings, sync
from medr3_jax.trainer.checkpoints import (
    Checkpointer,
    ShardingsFn,
    final_checkpoint,
    load_params_from_checkpoint,
    restore_target,
)
from medr3_jax.trainer.experiment import PREVIOUS_STAGE, Experiment, stage_remote_inputs
from medr3_jax.trainer.periodic_eval import PeriodicEvaluation
from medr3_jax.trainer.step import PolicyTrainer
from medr3_jax.trainer.tokenizer_copy import save_tokenizer_copy

log = logging.getLogger("medr3_jax.train")

CACHE_DIR = assets.CACHE_ROOT


@dataclasses.dataclass(frozen=True)
class StageModel:
    """What every stage (RL or supervised) builds first: the Experiment with its remote inputs
    staged locally, the mesh, the model sharded over it as it loads, its tokenizer, and the
    stage's checkpointer."""

    exp: Experiment
    stage_dir: str
    mesh: jax.sharding.Mesh
    shardings: ShardingsFn
    model: nnx.Module
    tokenizer: Tokenizer
    checkpointer: Checkpointer


def stage_model(exp: Experiment, workdir: str) -> StageModel:
    exp = stage_remote_inputs(exp)
    mesh = make_mesh(exp.mesh)
    shardings = lambda cfg: param_shardings(cfg, mesh)  # noqa: E731
    model, tokenizer = load_model(exp.model, shardings=shardings, **backend_overrides(exp.param_dtype,
                                                                                        exp.cache_attention))  # fmt: skip
    stage_dir = fileio.join(workdir, exp.stage)  # workdir may be a URL (gs://): see medr3_jax.fileio
    if is_primary():  # export / evaluate elsewhere load the tokenizer from here (trainer.tokenizer_copy)
        try:
            save_tokenizer_copy(tokenizer, stage_dir)
        except OSError as err:  # a full disk: logged; the checkpoints decide whether the run may go on
            log.warning("[%s] tokenizer copy not written under %s (%s); training goes on", exp.stage, stage_dir, err)
    checkpointer = Checkpointer(fileio.join(stage_dir, "checkpoints"), exp.checkpoint)
    return StageModel(exp, stage_dir, mesh, shardings, model, tokenizer, checkpointer)


def start_policy(exp: Experiment, workdir: str, checkpointer: Checkpointer, policy: PolicyTrainer,
                 shardings: ShardingsFn) -> tuple[int, int]:  # fmt: skip
    """(first step, data position): resume this stage, else start from init_from or the base.

    With a KL term the reference is the stage's starting weights (init_from or the base model),
    also when the stage resumes from its own checkpoint, so a resumed run equals a straight one.
    """
    latest = checkpointer.latest_step()
    keep_reference = exp.update.loss.kl_coef > 0
    if latest is None or keep_reference:
        source = init_source(exp, workdir, quiet=latest is not None)
        if source is not None:
            model, meta = load_params_from_checkpoint(source, shardings_fn=shardings)
            _, params = nnx.split(model)
            policy.params = jax.tree.map(lambda new, old: new.astype(old.dtype), params, policy.params)
            policy.opt_state = policy.init_opt_state(policy.params)
            if latest is None:
                log.info("[%s] starting from %s (stage %s, step %s)", exp.stage, source, meta.get("stage"),
                         meta.get("step"))  # fmt: skip
        if keep_reference:
            policy.set_reference(policy.sampler_params())  # in the model's dtype: what the sampler runs
            log.info("[%s] KL reference (kl_coef %g): %s", exp.stage, exp.update.loss.kl_coef, source or exp.model)
    if latest is not None:  # the newest step that restores; broken newer ones are set aside (logged)
        state, meta = checkpointer.restore_latest_good(abstract_state=restore_target(policy.state()))
        policy.load_state(state)
        log.info("[%s] resuming from its checkpoint at step %d (data position %d)", exp.stage, meta["step"],
                 meta["data_position"])  # fmt: skip
        return int(meta["step"]), int(meta["data_position"])
    return 0, 0


def init_source(exp: Experiment, workdir: str, *, quiet: bool = False) -> str | None:
    """The checkpoint a fresh stage starts from (None: the base model); says which unless quiet."""
    say = (lambda *args: None) if quiet else log.info
    if exp.init_from == "base":
        say("[%s] starting from the base model %s (init_from='base')", exp.stage, exp.model)
        return None
    if exp.init_from != "auto":
        if not os.path.isdir(exp.init_from):
            raise FileNotFoundError(f"Experiment.init_from={exp.init_from!r}: no such checkpoint directory")
        return exp.init_from
    earlier = []  # the stages before this one, nearest first
    while (stage := PREVIOUS_STAGE.get(earlier[-1] if earlier else exp.stage)) is not None:
        earlier.append(stage)
    for stage in earlier:  # the nearest earlier stage that ran under this workdir (stage 0 is optional)
        found = final_checkpoint(fileio.join(workdir, stage, "checkpoints"))
        if found is not None:
            return found
    if earlier and earlier != ["stage0"]:
        say("[%s] no checkpoint of %s under %s: starting from the base model %s", exp.stage, "/".join(earlier),
            workdir, exp.model)  # fmt: skip
    else:
        say("[%s] starting from the base model %s", exp.stage, exp.model)
    return None


def train_records(exp: Experiment) -> list[QARecord]:
    """Every record of the stage's train_data splits, in order."""
    return [r for records in split_records(exp, exp.train_data, "train_data").values() for r in records]


def split_records(exp: Experiment, specs: Sequence[str], knob: str) -> dict[str, list[QARecord]]:
    """Each "name[/config]:split" -> its records, from exp.data_dir (None: the bundled sample set,
    prepared once into the cache)."""
    from medr3_jax.data.datasets import load_records, prepare_dataset  # noqa: PLC0415 (imports TFDS)

    data_dir = exp.data_dir
    out: dict[str, list[QARecord]] = {}
    for spec in specs:
        name, _, split = spec.rpartition(":")
        if not name or not split:
            raise ValueError(f"Experiment.{knob} entry {spec!r}: expected 'name[/config]:split'")
        if exp.data_dir is None:
            data_dir = os.path.join(CACHE_DIR, "sample_tfds")
            if is_primary():  # one writer into the shared cache; the others wait for it
                with contextlib.redirect_stdout(sys.stderr):
                    prepare_dataset(name, assets.sample_dataset_dir(name), data_dir)
            sync(f"sample data {name}")
        out[spec] = load_records(name, split, data_dir)
    return out


def stage_evaluation(exp: Experiment, records: Sequence[QARecord], stage_dir: str, sampler: Sampler, retriever,
                protocol: P.Protocol) -> PeriodicEvaluation:  # fmt: skip
    """The stage's evaluation: eval_data on the training sampler (its weights follow the updates)
    and retriever, with eval.samples answers per question; a question also in `records` (the
    training questions) is named in a warning."""
    splits = {k: v[: exp.eval_questions] for k, v in split_records(exp, exp.eval_data, "eval_data").items()}
    train = {" ".join(r.question.split()) for r in records}  # by text: ids are per split ("0000", ...)
    overlap = sum(" ".join(r.question.split()) in train for held_out in splits.values() for r in held_out)
    if overlap:
        log.warning("[%s] %d evaluation questions are also training questions (Experiment.eval_data)", exp.stage,
                    overlap)  # fmt: skip
    engine = RolloutEngine(sampler, retriever, dataclasses.replace(exp.rollout, group_size=exp.eval.samples), protocol)
    run = {"stage": exp.stage, "model": exp.model, "retrieval": exp.retrieval_backend if exp.rollout.retrieval
           else "off", "protocol": protocol.name, "question_form": exp.prompt.question_form,
           "samples": exp.eval.samples, "temperature": exp.eval.temperature, "top_p": exp.eval.top_p,
           "seed": exp.eval.seed, "max_new_tokens": exp.rollout.max_response_tokens}  # fmt: skip
    log.info("[%s] evaluating %s (%d questions) every %d steps%s", exp.stage,
             ", ".join(f"{k} ({len(v)})" for k, v in splits.items()), sum(map(len, splits.values())), exp.eval_every,
             " and before the first" if exp.eval_before_train else "")  # fmt: skip
    return PeriodicEvaluation(engine, splits, exp.prompt, exp.eval, directory=fileio.join(stage_dir, "eval"),
                              every=exp.eval_every, before_train=exp.eval_before_train, num_steps=exp.num_steps,
                              run=run)  # fmt: skip


def open_retriever(exp: Experiment, tokenizer: Tokenizer):
    from medr3_jax.retrieval.retriever import Retriever  # noqa: PLC0415

    index_dir = exp.index_dir or sample_index(tokenizer)
    return Retriever(index_dir, backend=exp.retrieval_backend)


def sample_index(tokenizer: Tokenizer) -> str:
    """The bundled sample corpus embedded with MiniLM (passage store in this policy's tokens),
    built once into the cache (about a minute on 2 CPU cores)."""
    from medr3_jax.retrieval.embed import EmbedSettings, embed_corpus  # noqa: PLC0415
    from medr3_jax.retrieval.store import IndexManifest  # noqa: PLC0415

    key = hashlib.sha1(f"{tokenizer.path}|{tokenizer.vocab_size}".encode()).hexdigest()[:12]
    out = os.path.join(CACHE_DIR, "sample_index", key)
    if is_primary() and not (IndexManifest.exists(out) and IndexManifest.read(out).complete):
        log.info("building the sample retrieval index into %s (once)", out)
        settings = EmbedSettings(batch_size=64, max_len=256, passage_tokens=256)
        embed_corpus(
            [assets.sample_corpus_dir()], assets.minilm_dir(), out, settings=settings, policy_tokenizer=tokenizer
        )
    sync("sample index")
    return out


def reference_path(exp: Experiment) -> str | None:
    """Where the stage's reference records are: Experiment.references, with "auto" = the
    `references/` folder of data_dir (the bundled sample's own file when data_dir is None), None
    when that does not exist."""
    path = exp.references
    if path == "auto":
        path = assets.sample_references() if exp.data_dir is None else os.path.join(exp.data_dir, REFERENCES_DIR)
        if not os.path.exists(path):
            return None
    return path


def stage_references(exp: Experiment, records: Sequence[QARecord]) -> dict[tuple[str, str], list[Reference]]:
    """The stage's reference records, and one line at start saying whether the graph term is on
    (it needs a judge and references; a missing term is counted in `reward/graph_missing`)."""
    path = reference_path(exp)
    stats = ReferenceStats()
    refs = read_references(path, stats) if path else {}
    covered = sum((r.dataset, r.id) in refs for r in records)
    if exp.judge is None or not covered:
        why = "no judge (Experiment.judge)" if exp.judge is None else f"no references for its questions ({path})"
        log.warning("[%s] the reasoning-graph term (weight %g) is off: %s", exp.stage, exp.rewards.graph, why)
    else:
        log.info("[%s] reasoning-graph term on: references for %d of %d questions from %s (%d lines left out)",
                 exp.stage, covered, len(records), path, sum(stats.bad_lines.values()))  # fmt: skip
    return refs


def judge_metrics(judge: Judge | None) -> dict[str, float]:
    """The judge's counters (requests, failures by cause, unreadable replies), when it keeps them;
    the whole job's for a `ProcessShardedJudge` (a collective: every process calls this)."""
    stats = judge.job_stats() if hasattr(judge, "job_stats") else getattr(judge, "stats", None)
    return stats.as_metrics() if isinstance(stats, JudgeStats) else {}


def no_embed(texts: Sequence[str]) -> np.ndarray:
    raise RuntimeError("the reasoning-graph reward needs the retriever's encoder (retrieval is off)")
