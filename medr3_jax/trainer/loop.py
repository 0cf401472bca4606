"""One training stage: questions -> rollouts -> rewards -> advantages -> updates -> metrics,
checkpoints and audit dumps, resumable from its last checkpoint.

    final_checkpoint_dir = run_stage(Experiment(stage="stage3"), workdir="runs/demo")

Resume order: this stage's own latest checkpoint (exact resume: parameters, optimizer, step,
data position) -> the previous stage's final checkpoint (`init_from="auto"`) or a bound path
-> the base model's weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import sys
import time
from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from medr3_jax import assets
from medr3_jax import protocol as P
from medr3_jax.data.pipeline import QuestionStream
from medr3_jax.data.prompts import PromptStyle, shown_question
from medr3_jax.data.records import QARecord
from medr3_jax.data.references import REFERENCES_DIR, Reference, ReferenceStats, read_references
from medr3_jax.evaluation.rollouts import EvalSettings
from medr3_jax.models.loading import backend_overrides, load_model
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.remote import is_remote, stage
from medr3_jax.rewards import (
    GraphReward,
    Judge,
    JudgeStats,
    Outcome,
    OverlongConfig,
    RewardRules,
    RewardWeights,
    Scored,
    score_outcomes,
)
from medr3_jax.rewards.shared_judge import ProcessShardedJudge
from medr3_jax.rl import ESTIMATORS, group_advantages
from medr3_jax.rollout import Rollout, RolloutConfig, RolloutEngine
from medr3_jax.rollout.audit import write_audit
from medr3_jax.sampling import Sampler, SamplingParams
from medr3_jax.sharding import is_primary, make_mesh, param_shardings, sync
from medr3_jax.trainer.checkpoints import CheckpointConfig, Checkpointer, final_checkpoint, load_params_from_checkpoint
from medr3_jax.trainer.metrics import MetricWriter
from medr3_jax.trainer.periodic_eval import PeriodicEvaluation
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, TrainBatch, UpdateConfig

log = logging.getLogger("medr3_jax.train")

PREVIOUS_STAGE = {"stage2": "stage1", "stage3": "stage2"}
CACHE_DIR = assets.CACHE_ROOT


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    """Everything one stage needs. Defaults: the bundled demo (SmolLM2-135M-Instruct, the
    sample questions and corpus, MiniLM exact retrieval, a few small steps on CPU)."""

    stage: str = "stage3"
    model: str = "smollm2_135m_instruct"  # preset with bundled weights, HF dir or .gguf
    init_from: str = "auto"  # "auto" (previous stage under the workdir), "base", or a checkpoint dir
    train_data: tuple[str, ...] = ("medqa:train", "medmcqa:train", "pubmedqa:train")  # "name[/config]:split"
    data_dir: str | None = None  # prepared TFDS data; None = the bundled sample set
    index_dir: str | None = None  # retrieval index (retrieval.embed); None = the bundled sample corpus
    retrieval_backend: str = "exact"
    num_steps: int = 3
    prompts_per_step: int = 2  # questions per step; rows = prompts_per_step x rollout.group_size
    prompt_buckets: tuple[int, ...] = (256, 512, 1024, 2048)
    seed: int = 0
    mesh: str = "data=1,fsdp=-1,tensor=1"
    param_dtype: str | None = None  # default: float32 on CPU, bfloat16 on accelerators
    cache_attention: str | None = None  # ModelConfig.cache_attention; default: blockwise on CPU, dense elsewhere
    protocol: str = "med_r3"  # medr3_jax.protocol: "med_r3" (the authors') or "search_r1"
    sampling: SamplingParams = SamplingParams(temperature=1.0)
    prompt: PromptStyle = PromptStyle(mode="search")
    rollout: RolloutConfig = RolloutConfig(group_size=4, max_response_tokens=192, decode_segment=64, sequence_bucket=64)
    rewards: RewardWeights = RewardWeights()
    reward_rules: RewardRules = RewardRules()
    overlong: OverlongConfig = OverlongConfig()
    advantage_estimator: str = "grpo"  # rl.group_advantages: "grpo" (the authors'), "drgrpo" or "rloo"
    optimizer: OptimizerConfig = OptimizerConfig()
    update: UpdateConfig = UpdateConfig(micro_batch=2)
    checkpoint: CheckpointConfig = CheckpointConfig(every_steps=2, keep=2)
    judge: Judge | None = None
    # Reference reasoning records for the graph term (data.references): "auto" = the `references/`
    # folder in data_dir that `python -m medr3_jax.data.references` writes (the bundled sample's own
    # when data_dir is None), a .jsonl file or folder of them, or None (off).
    references: str | None = "auto"
    audit_every: int = 1
    # Evaluation during training (trainer.periodic_eval): eval_data's questions ("name[/config]:
    # split", held out from train_data) on this stage's rollout path every eval_every steps and
    # after the last (0 = off, as the authors run: test_freq=-1), and before the first step with
    # eval_before_train; eval_questions: the first N of each split (None = all).
    eval_data: tuple[str, ...] = ()
    eval_every: int = 0
    eval_before_train: bool = True
    eval_questions: int | None = None
    eval: EvalSettings = EvalSettings()

    def __post_init__(self) -> None:
        if self.rollout.retrieval != (self.prompt.mode == "search"):
            raise ValueError(
                f"{self.stage}: RolloutConfig.retrieval={self.rollout.retrieval} but PromptStyle.mode={self.prompt.mode!r}; "
                "retrieval goes with the 'search' prompt, no retrieval with 'reason'"
            )
        if self.num_steps < 1 or self.prompts_per_step < 1:
            raise ValueError(f"{self.stage}: num_steps and prompts_per_step must be >= 1")
        if self.cache_attention not in (None, "blockwise", "dense"):
            raise ValueError(f"Experiment.cache_attention={self.cache_attention!r}: expected 'blockwise' or 'dense'")
        P.get_protocol(self.protocol)
        if self.advantage_estimator not in ESTIMATORS:
            raise ValueError(f"Experiment.advantage_estimator={self.advantage_estimator!r}: expected one of "
                             f"{list(ESTIMATORS)}")  # fmt: skip
        self.overlong.buffer_for(self.rollout.max_response_tokens)
        if self.eval_every < 0 or (self.eval_every and not self.eval_data):
            raise ValueError(f"{self.stage}: Experiment.eval_every={self.eval_every} needs >= 0, and eval_data "
                             "(e.g. ('mirage:medqa',)) when > 0")  # fmt: skip
        if self.eval_questions is not None and self.eval_questions < 1:
            raise ValueError(f"Experiment.eval_questions={self.eval_questions}: expected >= 1 or None")


REMOTE_INPUTS = ("model", "init_from", "data_dir", "index_dir")


def stage_remote_inputs(exp: Experiment) -> Experiment:
    """`exp` with each remote input (gs://... in `REMOTE_INPUTS`) replaced by its local copy
    (medr3_jax.remote.stage: fetched once into the cache, again only where files changed)."""
    changes = {k: stage(v, knob=f"Experiment.{k}") for k in REMOTE_INPUTS if is_remote(v := getattr(exp, k))}
    return dataclasses.replace(exp, **changes) if changes else exp


def refuse_remote_path(knob: str, value: str | None) -> None:
    """The workdir is written as local files: a URL (gs://, s3://, ...) gets an error naming the
    knob and the workaround, instead of a directory called 'gs:' under the current one."""
    if is_remote(value):
        raise ValueError(
            f"{knob}={value!r}: a remote workdir is not written directly; mount the bucket with Cloud "
            "Storage FUSE (gcsfuse) at the same path on every host and pass that path — on a TPU VM "
            "`tpu/launch.sh --workdir gs://BUCKET/PATH` does that for you (inputs such as "
            "Experiment.model or index_dir may be gs:// URLs: they are copied to local disk)"
        )


def run_stage(exp: Experiment, workdir: str, *, operative_config: str = "") -> str:
    """Runs (or resumes) one stage under `workdir/<stage>`; returns its checkpoint dir."""
    stage_dir = os.path.join(workdir, exp.stage)
    log.info("[%s] workdir %s", exp.stage, os.path.abspath(stage_dir))
    exp = stage_remote_inputs(exp)
    mesh = make_mesh(exp.mesh)
    overrides = backend_overrides(exp.param_dtype, exp.cache_attention)
    shardings = lambda cfg: param_shardings(cfg, mesh)  # noqa: E731
    model, tokenizer = load_model(exp.model, shardings=shardings, **overrides)
    checkpointer = Checkpointer(os.path.join(stage_dir, "checkpoints"), exp.checkpoint)
    policy = PolicyTrainer(model, exp.optimizer, exp.update, mesh, temperature=exp.sampling.temperature)
    start, position = _initialise(exp, workdir, checkpointer, policy, shardings)

    records = _train_records(exp)
    # Every process reads the same global batch and runs the host side of the rollout for all
    # rows (replicated host view); the device work is sharded over the whole mesh.
    protocol = P.get_protocol(exp.protocol)
    stream = QuestionStream(records, tokenizer=tokenizer, style=exp.prompt, batch_size=exp.prompts_per_step,
                            seed=exp.seed, buckets=exp.prompt_buckets, process_index=0, process_count=1,
                            protocol=protocol, max_searches=exp.rollout.max_searches)  # fmt: skip
    stream.seek(position)
    retriever = _retriever(exp, tokenizer) if exp.rollout.retrieval else None
    sampler = Sampler(nnx.merge(policy.graphdef, policy.sampler_params()), tokenizer,
                      stop_strings=protocol.stop_strings(retrieval=exp.rollout.retrieval),
                      max_new_tokens=exp.rollout.max_response_tokens, mesh=mesh)  # fmt: skip
    engine = RolloutEngine(sampler, retriever, exp.rollout, protocol)
    judge = exp.judge
    if judge is not None and jax.process_count() > 1:  # every host scores the same rows: ask each prompt once
        judge = ProcessShardedJudge(judge)
    graph = None
    if exp.rewards.graph:
        embed, embed_id = (retriever.encode_queries, retriever.embedding_id) if retriever else (_no_embed, None)
        graph = GraphReward(judge, embed, embed_id=embed_id)
    references = _references(exp, records) if exp.rewards.graph else {}
    writer = MetricWriter(os.path.join(stage_dir, "tb"))
    if operative_config:
        writer.text(start, "config/operative", operative_config)
    evaluation = _evaluation(exp, records, stage_dir, sampler, retriever, protocol) if exp.eval_every else None
    if evaluation is not None and evaluation.best is not None:
        checkpointer.keep_also([evaluation.best["step"]])

    def evaluate(step: int) -> None:  # the weights after `step` updates: checkpoint `step`, when step >= 1
        kept = evaluation.best
        metrics = evaluation.run(step, checkpoint=checkpointer.step_dir(step) if step else None)
        writer.scalars(step, metrics)
        if evaluation.best is not kept:
            checkpointer.keep_also([evaluation.best["step"]])

    log.info("[%s] training steps %d..%d on %d questions, %d rows per step, protocol %s, %s questions", exp.stage,
             start, exp.num_steps - 1, len(records), exp.prompts_per_step * exp.rollout.group_size, protocol.name,
             exp.prompt.question_form)  # fmt: skip
    for step in range(start, exp.num_steps):
        if evaluation is not None and evaluation.due(step) and not evaluation.finished(step):
            evaluate(step)
        t0 = time.perf_counter()
        batch = stream.next()
        rollout = engine.run(batch.prompts, params=exp.sampling, seed=exp.seed * 100_003 + step)
        t1 = time.perf_counter()
        rows = [r for r in batch.records for _ in range(exp.rollout.group_size)]
        scored = score_rollout(exp, protocol, rollout, rows, judge=judge, graph=graph, references=references)
        advantages = group_advantages(scored.totals, rollout.group_ids, len(batch.records),
                                      estimator=exp.advantage_estimator)  # fmt: skip
        t2 = time.perf_counter()
        train = policy.update(_train_batch(rollout, np.asarray(advantages)), seed=step)
        sampler.update_params(policy.sampler_params())
        t3 = time.perf_counter()
        perf = {"perf/rollout_s": t1 - t0, "perf/reward_s": t2 - t1, "perf/update_s": t3 - t2,
                "perf/step_seconds": t3 - t0, "perf/train_tokens": float(rollout.mask.sum())}  # fmt: skip
        metrics = scored.metrics | train | _rollout_metrics(rollout) | perf | _judge_metrics(exp.judge)
        writer.scalars(step, metrics)
        if exp.audit_every and step % exp.audit_every == 0 and is_primary():
            write_audit(os.path.join(stage_dir, "rollouts", f"step_{step:06d}.jsonl"), step, rollout, rows, scored,
                        questions=[shown_question(r, exp.prompt.question_form)[0] for r in rows],
                        passage_title=(lambda pid: retriever.passage(pid).title) if retriever else None)  # fmt: skip
        log.info("[%s] step %d: reward %.3f, answer %.3f, searches/row %.2f, loss %.4f, %.1fs", exp.stage, step,
                 metrics["reward/total"], metrics.get("reward/answer", float("nan")),
                 metrics["rollout/searches_per_row"], metrics["loss/total"], metrics["perf/step_seconds"])  # fmt: skip
        due = step + 1 == exp.num_steps or (evaluation is not None and evaluation.due(step + 1))
        checkpointer.save(step + 1, _state(policy, step), _meta(exp, step + 1, stream.position, model, tokenizer,
                          operative_config), force=due)  # fmt: skip
    if evaluation is not None and evaluation.due(exp.num_steps) and not evaluation.finished(exp.num_steps):
        evaluate(exp.num_steps)
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    log.info("[%s] done: checkpoints in %s", exp.stage, checkpointer.directory)
    return checkpointer.directory


# ---- start-up ---------------------------------------------------------------------------
def _initialise(exp, workdir, checkpointer, policy, shardings) -> tuple[int, int]:
    """(first step, data position): resume this stage, else start from init_from or the base.

    With a KL term the reference is the stage's starting weights (init_from or the base model),
    also when the stage resumes from its own checkpoint, so a resumed run equals a straight one.
    """
    latest = checkpointer.latest_step()
    keep_reference = exp.update.loss.kl_coef > 0
    if latest is None or keep_reference:
        source = _init_source(exp, workdir, quiet=latest is not None)
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
    if latest is not None:
        state, meta = checkpointer.restore(latest, abstract_state=_abstract(_state(policy, 0)))
        _load_state(policy, state)
        log.info("[%s] resuming from its checkpoint at step %d (data position %d)", exp.stage, latest,
                 meta["data_position"])  # fmt: skip
        return int(meta["step"]), int(meta["data_position"])
    return 0, 0


def _init_source(exp: Experiment, workdir: str, *, quiet: bool = False) -> str | None:
    """The checkpoint a fresh stage starts from (None: the base model); says which unless quiet."""
    say = (lambda *args: None) if quiet else log.info
    if exp.init_from == "base":
        say("[%s] starting from the base model %s (init_from='base')", exp.stage, exp.model)
        return None
    if exp.init_from != "auto":
        if not os.path.isdir(exp.init_from):
            raise FileNotFoundError(f"Experiment.init_from={exp.init_from!r}: no such checkpoint directory")
        return exp.init_from
    previous = PREVIOUS_STAGE.get(exp.stage)
    if previous is None:
        say("[%s] starting from the base model %s", exp.stage, exp.model)
        return None
    found = final_checkpoint(os.path.join(workdir, previous, "checkpoints"))
    if found is None:
        say("[%s] no %s checkpoint under %s: starting from the base model %s instead", exp.stage, previous,
                 workdir, exp.model)  # fmt: skip
        return None
    return found


def _train_records(exp: Experiment) -> list[QARecord]:
    return [r for records in _split_records(exp, exp.train_data, "train_data").values() for r in records]


def _split_records(exp: Experiment, specs: Sequence[str], knob: str) -> dict[str, list[QARecord]]:
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


def _evaluation(exp: Experiment, records: Sequence[QARecord], stage_dir: str, sampler: Sampler, retriever,
                protocol: P.Protocol) -> PeriodicEvaluation:  # fmt: skip
    """The stage's evaluation: eval_data on the training sampler (its weights follow the updates)
    and retriever, with eval.samples answers per question; a question also in `records` (the
    training questions) is named in a warning."""
    splits = {k: v[: exp.eval_questions] for k, v in _split_records(exp, exp.eval_data, "eval_data").items()}
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
    return PeriodicEvaluation(engine, splits, exp.prompt, exp.eval, directory=os.path.join(stage_dir, "eval"),
                              every=exp.eval_every, before_train=exp.eval_before_train, num_steps=exp.num_steps,
                              run=run)  # fmt: skip


def _retriever(exp: Experiment, tokenizer: Tokenizer):
    from medr3_jax.retrieval.retriever import Retriever  # noqa: PLC0415

    index_dir = exp.index_dir or sample_index(tokenizer)
    return Retriever(index_dir, backend=exp.retrieval_backend)


def sample_index(tokenizer: Tokenizer) -> str:
    """The bundled sample corpus embedded with MiniLM (passage store in this policy's tokens),
    built once into the cache (about a minute on 2 CPU cores)."""
    from medr3_jax.retrieval.embed import EmbedSettings, embed_corpus  # noqa: PLC0415

    key = hashlib.sha1(f"{tokenizer.path}|{tokenizer.vocab_size}".encode()).hexdigest()[:12]
    out = os.path.join(CACHE_DIR, "sample_index", key)
    if is_primary() and (not os.path.exists(os.path.join(out, "manifest.json")) or not _complete(out)):
        log.info("building the sample retrieval index into %s (once)", out)
        settings = EmbedSettings(batch_size=64, max_len=256, passage_tokens=256)
        embed_corpus(
            [assets.sample_corpus_dir()], assets.minilm_dir(), out, settings=settings, policy_tokenizer=tokenizer
        )
    sync("sample index")
    return out


def _complete(index_dir: str) -> bool:
    import json  # noqa: PLC0415

    with open(os.path.join(index_dir, "manifest.json"), encoding="utf-8") as fh:
        return bool(json.load(fh).get("complete"))


def _references(exp: Experiment, records: Sequence[QARecord]) -> dict[tuple[str, str], list[Reference]]:
    """The stage's reference records, and one line at start saying whether the graph term is on
    (it needs a judge and references; a missing term is counted in `reward/graph_missing`)."""
    path = exp.references
    if path == "auto":
        path = assets.sample_references() if exp.data_dir is None else os.path.join(exp.data_dir, REFERENCES_DIR)
        if not os.path.exists(path):
            path = None
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


def _judge_metrics(judge: Judge | None) -> dict[str, float]:
    """The judge's counters (requests, failures by cause, unreadable replies), when it keeps them."""
    stats = getattr(judge, "stats", None)
    return stats.as_metrics() if isinstance(stats, JudgeStats) else {}


def _no_embed(texts: Sequence[str]) -> np.ndarray:
    raise RuntimeError("the reasoning-graph reward needs the retriever's encoder (retrieval is off)")


# ---- per step ---------------------------------------------------------------------------
def score_rollout(exp: Experiment, protocol: P.Protocol, rollout: Rollout, rows: Sequence[QARecord], *,
                  judge: Judge | None = None, graph: GraphReward | None = None,
                  references: Mapping[tuple[str, str], Sequence[Reference]] | None = None) -> Scored:  # fmt: skip
    """`rewards.score_outcomes` of a rollout under the stage's protocol, question form, rules and
    response cap; the assistant text of each row is its prefix (usually "<think>") + its text."""
    outcomes = [
        Outcome(
            rollout.prefixes[i] + rollout.texts[i],
            int(rollout.response_lengths[i]),
            bool(rollout.flags[i] & P.BAD_SEARCH_FLAGS),
            tuple(rollout.retrieved_ids[i]),
            shown_question(record, exp.prompt.question_form)[0],
        )  # fmt: skip
        for i, record in enumerate(rows)
    ]
    return score_outcomes(outcomes, rows, exp.rewards, protocol=protocol, retrieval=exp.rollout.retrieval,
                          max_response_tokens=exp.rollout.max_response_tokens, rules=exp.reward_rules,
                          letters_shown=exp.prompt.question_form == "choices", judge=judge, graph=graph,
                          references=references, overlong=exp.overlong)  # fmt: skip


def _train_batch(rollout: Rollout, advantages: np.ndarray) -> TrainBatch:
    return TrainBatch(tokens=rollout.tokens, positions=rollout.positions, mask=rollout.mask,
                      loss_mask=rollout.loss_mask, old_logprobs=rollout.logprobs,
                      advantages=advantages.astype(np.float32))  # fmt: skip


def _rollout_metrics(rollout: Rollout) -> dict[str, float]:
    out = {f"rollout/{k}": float(v) for k, v in rollout.stats.items() if not k.startswith("retrieval")}
    out |= {
        f"retrieval/{k.removeprefix('retrieval_')}": float(v)
        for k, v in rollout.stats.items()
        if k.startswith("retrieval")
    }
    out["rollout/response_tokens"] = float(rollout.response_lengths.mean())
    for flag in (P.FLAG_BAD_SEARCH, P.FLAG_WROTE_DOCUMENT, P.FLAG_SEARCH_CAP, P.FLAG_RESPONSE_CAP, P.FLAG_LENGTH):
        out[f"rollout/{flag}"] = float(np.mean([flag in f for f in rollout.flags]))
    return out


def _state(policy: PolicyTrainer, step: int) -> dict:
    rng = np.asarray(jax.random.key_data(jax.random.key(step)))
    if policy.mesh is not None:  # on the mesh, replicated: a single-device array cannot be saved by every host
        rng = jax.device_put(rng, NamedSharding(policy.mesh, PartitionSpec()))
    return {"params": policy.params.to_pure_dict(), "opt_state": policy.opt_state, "rng": rng}


def _load_state(policy: PolicyTrainer, state: dict) -> None:
    params = policy.params
    nnx.replace_by_pure_dict(params, state["params"])
    policy.params, policy.opt_state = params, state["opt_state"]


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _meta(exp: Experiment, step: int, position: int, model, tokenizer: Tokenizer, operative_config: str) -> dict:
    from medr3_jax.trainer.checkpoints import config_to_dict  # noqa: PLC0415

    return {"step": step, "stage": exp.stage, "data_position": position, "model_config": config_to_dict(model.config),
            "tokenizer": tokenizer.path, "operative_config": operative_config}  # fmt: skip
