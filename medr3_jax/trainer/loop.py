"""One RL stage, top to bottom: inputs -> build -> per step (rollout -> score -> advantages ->
update -> log -> checkpoint), with evaluation when due; resumable from its last checkpoint.

    final_checkpoint_dir = run_stage(Experiment(stage="stage3"), workdir="runs/demo")

Resume order: this stage's own latest checkpoint (exact resume: parameters, optimizer, step,
data position) -> the previous stage's final checkpoint (`init_from="auto"`) or a bound path
-> the base model's weights (`inputs.start_policy`). A stage with `Experiment.objective="sft"`
runs `trainer.sft.run_sft_stage` instead (the cold start).
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from medr3_jax import fileio
from medr3_jax import protocol as P
from medr3_jax.data.pipeline import QuestionStream
from medr3_jax.data.prompts import shown_question
from medr3_jax.data.records import QARecord
from medr3_jax.data.references import Reference
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.rewards import GraphReward, Judge, Outcome, Scored, score_outcomes
from medr3_jax.rewards.shared_judge import ProcessShardedJudge
from medr3_jax.rl import group_advantages
from medr3_jax.rollout import Rollout, RolloutEngine
from medr3_jax.rollout.audit import write_audit
from medr3_jax.sampling import Sampler
from medr3_jax.sharding import is_primary
from medr3_jax.trainer.checkpoints import Checkpointer, checkpoint_meta
from medr3_jax.trainer.experiment import Experiment
from medr3_jax.trainer.inputs import (
    judge_metrics,
    no_embed,
    open_retriever,
    stage_evaluation,
    stage_model,
    stage_references,
    start_policy,
    train_records,
)
from medr3_jax.trainer.metrics import MetricWriter
from medr3_jax.trainer.periodic_eval import PeriodicEvaluation
from medr3_jax.trainer.preemption import Preempted, PreemptionWatch
from medr3_jax.trainer.step import PolicyTrainer, TrainBatch

log = logging.getLogger("medr3_jax.train")


def run_stage(exp: Experiment, workdir: str, *, operative_config: str = "") -> str:
    """Runs (or resumes) one stage under `workdir/<stage>`; returns its checkpoint dir."""
    if exp.objective == "sft":
        from medr3_jax.trainer.sft import run_sft_stage  # noqa: PLC0415 (sft builds on this module's inputs)

        return run_sft_stage(exp, workdir, operative_config=operative_config)
    # ---- inputs: the model, where to start, the questions
    log.info("[%s] workdir %s", exp.stage, fileio.absolute(fileio.join(workdir, exp.stage)))
    built = stage_model(exp, workdir)
    exp, stage_dir, mesh, shardings = built.exp, built.stage_dir, built.mesh, built.shardings
    model, tokenizer, checkpointer = built.model, built.tokenizer, built.checkpointer
    policy = PolicyTrainer(model, exp.optimizer, exp.update, mesh, temperature=exp.sampling.temperature)
    start, position = start_policy(exp, workdir, checkpointer, policy, shardings)
    records = train_records(exp)
    protocol = P.get_protocol(exp.protocol)

    # ---- build: question stream, sampler + retriever (the rollout engine), rewards, logs, evaluation.
    # Every process reads the same global batch and runs the host side of the rollout for all
    # rows (replicated host view); the device work is sharded over the whole mesh.
    stream = QuestionStream(records, tokenizer=tokenizer, style=exp.prompt, batch_size=exp.prompts_per_step,
                            seed=exp.seed, buckets=exp.prompt_buckets, process_index=0, process_count=1,
                            protocol=protocol, max_searches=exp.rollout.max_searches)  # fmt: skip
    stream.seek(position)
    retriever = open_retriever(exp, tokenizer) if exp.rollout.retrieval else None
    sampler = Sampler(nnx.merge(policy.graphdef, policy.sampler_params()), tokenizer,
                      stop_strings=protocol.stop_strings(retrieval=exp.rollout.retrieval),
                      max_new_tokens=exp.rollout.max_response_tokens, mesh=mesh)  # fmt: skip
    engine = RolloutEngine(sampler, retriever, exp.rollout, protocol)
    judge = exp.judge
    if judge is not None and jax.process_count() > 1:  # every host scores the same rows: ask each prompt once
        judge = ProcessShardedJudge(judge)
    graph = None
    if exp.rewards.graph:
        embed, embed_id = (retriever.encode_queries, retriever.embedding_id) if retriever else (no_embed, None)
        graph = GraphReward(judge, embed, embed_id=embed_id)
    references = stage_references(exp, records) if exp.rewards.graph else {}
    writer = MetricWriter(fileio.join(stage_dir, "tb"))
    if operative_config:
        writer.text(start, "config/operative", operative_config)
    evaluation = stage_evaluation(exp, records, stage_dir, sampler, retriever, protocol) if exp.eval_every else None
    if evaluation is not None:
        evaluation.protect_best(checkpointer)

    # ---- per step
    log.info("[%s] training steps %d..%d on %d questions, %d rows per step, protocol %s, %s questions", exp.stage,
             start, exp.num_steps - 1, len(records), exp.prompts_per_step * exp.rollout.group_size, protocol.name,
             exp.prompt.question_form)  # fmt: skip
    with PreemptionWatch() as watch:
        for step in range(start, exp.num_steps):
            if evaluation is not None:
                evaluation.run_if_due(step, checkpointer, writer)
            t0 = time.perf_counter()
            batch = stream.next()  # rollout
            rollout = engine.run(batch.prompts, params=exp.sampling, seed=exp.seed * 100_003 + step)
            t1 = time.perf_counter()
            rows = [r for r in batch.records for _ in range(exp.rollout.group_size)]  # score
            scored = score_rollout(exp, protocol, rollout, rows, judge=judge, graph=graph, references=references)
            advantages = group_advantages(scored.totals, rollout.group_ids, len(batch.records),  # advantages
                                          estimator=exp.advantage_estimator)  # fmt: skip
            t2 = time.perf_counter()
            train = policy.update(rollout_batch(rollout, np.asarray(advantages)), seed=step)  # update
            sampler.update_params(policy.sampler_params())
            t3 = time.perf_counter()
            perf = {"perf/rollout_s": t1 - t0, "perf/reward_s": t2 - t1, "perf/update_s": t3 - t2,  # log
                    "perf/step_seconds": t3 - t0, "perf/train_tokens": float(rollout.mask.sum())}  # fmt: skip
            metrics = scored.metrics | train | rollout.metrics() | perf | judge_metrics(judge)
            writer.scalars(step, metrics)
            if exp.audit_every and step % exp.audit_every == 0 and is_primary():
                audit = fileio.join(stage_dir, "rollouts", f"step_{step:06d}.jsonl")
                try:
                    write_audit(audit, step, rollout, rows, scored,
                                questions=[shown_question(r, exp.prompt.question_form)[0] for r in rows],
                                passage_title=(lambda pid: retriever.passage(pid).title) if retriever else None)  # fmt: skip
                except OSError as err:  # a full disk: logged; the checkpoints decide whether the run may go on
                    log.warning("[%s] %s not written (%s); training goes on", exp.stage, audit, err)
            log.info("[%s] step %d: reward %.3f, answer %.3f, searches/row %.2f, loss %.4f, %.1fs", exp.stage, step,
                     metrics["reward/total"], metrics.get("reward/answer", float("nan")),
                     metrics["rollout/searches_per_row"], metrics["loss/total"], metrics["perf/step_seconds"])  # fmt: skip
            stop = step + 1 < exp.num_steps and watch.stop_requested(step + 1)  # SIGTERM on any host
            save_step(
                exp,
                step + 1,
                checkpointer,
                policy,
                evaluation,
                data_position=stream.position,  # checkpoint
                model=model,
                tokenizer=tokenizer,
                operative_config=operative_config,
                force=stop,
            )
            if stop:
                stop_preempted(step + 1, checkpointer, writer)
    return end_stage(exp, checkpointer, writer, evaluation)


def save_step(exp: Experiment, step: int, checkpointer: Checkpointer, policy: PolicyTrainer,
              evaluation: PeriodicEvaluation | None, *, data_position: int, model, tokenizer: Tokenizer,
              operative_config: str, force: bool = False) -> None:  # fmt: skip
    """Checkpoint `step` (the weights after `step` updates) when due; always after the last step,
    before an evaluation (so that an evaluated step has its checkpoint) and when `force`d."""
    meta = checkpoint_meta(step=step, stage=exp.stage, data_position=data_position, model_config=model.config,
                           tokenizer=tokenizer.path, operative_config=operative_config)  # fmt: skip
    due = force or step == exp.num_steps or (evaluation is not None and evaluation.due(step))
    checkpointer.save(step, policy.state(), meta, force=due)


def stop_preempted(step: int, checkpointer: Checkpointer, writer: MetricWriter) -> None:
    """After a SIGTERM: the checkpoint of `step` committed, the logs closed, then `Preempted`."""
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    raise Preempted(step, checkpointer.directory)


def end_stage(exp: Experiment, checkpointer: Checkpointer, writer: MetricWriter,
              evaluation: PeriodicEvaluation | None) -> str:  # fmt: skip
    """The evaluation after the last step (when due), then the last save committed and the files
    closed; returns the stage's checkpoint directory."""
    if evaluation is not None:
        evaluation.run_if_due(exp.num_steps, checkpointer, writer)
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    log.info("[%s] done: checkpoints in %s", exp.stage, checkpointer.directory)
    return checkpointer.directory


def score_rollout(exp: Experiment, protocol: P.Protocol, rollout: Rollout, rows: Sequence[QARecord], *,
                  judge: Judge | None = None, graph: GraphReward | None = None,
                  references: Mapping[tuple[str, str], Sequence[Reference]] | None = None) -> Scored:  # fmt: skip
    """`rewards.score_outcomes` of a rollout under the stage's protocol, question form, rules and
    response cap; the assistant text of each row is its prefix (usually "<think>") + its text."""
    texts = rollout.assistant_texts
    outcomes = [
        Outcome(
            texts[i],
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


def rollout_batch(rollout: Rollout, advantages: np.ndarray) -> TrainBatch:
    """The update's batch: the rollout's arrays, the sampler's log-probs as the old ones."""
    return TrainBatch(tokens=rollout.tokens, positions=rollout.positions, mask=rollout.mask,
                      loss_mask=rollout.loss_mask, old_logprobs=rollout.logprobs,
                      advantages=advantages.astype(np.float32))  # fmt: skip
