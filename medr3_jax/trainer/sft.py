"""The cold start (stage 0, `Experiment.objective="sft"`): supervised fine-tuning on reference
chains written in the protocol's format, so that the policy writes the tags before RL begins.

    run_sft_stage(Experiment(stage="stage0", objective="sft", references="auto"), "runs/demo")

Each reference chain (`data.references`: the bundled ones, or those `python -m
medr3_jax.data.references` builds) becomes one row: the training prompt of its question (the
stage's `PromptStyle`, protocol and question form: what RL will show), then the chain after the
prompt's assistant prefix ("<think>"), then end-of-sequence. The loss is the mean negative
log-likelihood of the chain's tokens with the `<document>` blocks masked out, as the policy
gradient masks inserted passages: the policy learns to search and to answer, never to write
passages. Checkpoints, resume (exact: the data position is the step), TensorBoard and periodic
evaluation are the RL stages'. Many R1-style recipes start this way; the authors go straight to
RL from a base model (GitHub 8023looker/Med-R3, `myverl/med_R3_grpo.sh`), so the paper recipe
leaves stage 0 out.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
from flax import nnx

from medr3_jax import fileio
from medr3_jax import protocol as P
from medr3_jax.data.prompts import PromptStyle, render_prompt
from medr3_jax.data.records import QARecord
from medr3_jax.data.references import Reference, ReferenceStats, read_references
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.sampling import Sampler
from medr3_jax.trainer.experiment import Experiment
from medr3_jax.trainer.inputs import (
    open_retriever,
    reference_path,
    stage_evaluation,
    stage_model,
    start_policy,
    train_records,
)
from medr3_jax.trainer.loop import end_stage, save_step, stop_preempted
from medr3_jax.trainer.metrics import MetricWriter
from medr3_jax.trainer.preemption import PreemptionWatch
from medr3_jax.trainer.step import PolicyTrainer, TrainBatch

log = logging.getLogger("medr3_jax.train")


class ChainError(ValueError):
    """A reference chain that cannot follow its training prompt."""


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """One row: prompt tokens, then the chain's tokens with their loss flags (False on documents)."""

    key: tuple[str, str]  # (dataset, question id)
    prompt: tuple[int, ...]
    response: tuple[int, ...]
    trained: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.prompt) + len(self.response)


def chain_example(record: QARecord, chain: str, tokenizer: Tokenizer, style: PromptStyle, protocol: P.Protocol, *,
                  max_searches: int) -> SFTExample:  # fmt: skip
    """The row of one reference chain. The chain must start with the prompt's assistant prefix
    ("<think>" for every Med-R3 prompt); its `<document>...</document>` blocks are tokenised as
    segments of their own (as the rollout inserts them) and carry no loss; the rest, and the
    end-of-sequence token after it, do."""
    prompt_text = render_prompt(record, style, tokenizer, protocol=protocol, max_searches=max_searches)
    prefix = P.assistant_prefix(prompt_text)
    if not chain.startswith(prefix):
        raise ChainError(f"the chain does not start with the prompt's assistant prefix {prefix!r}")
    blocks = re.compile(f"({re.escape(protocol.document_open)}.*?{re.escape(protocol.document_close)})", re.DOTALL)
    response: list[int] = []
    trained: list[bool] = []
    for i, segment in enumerate(blocks.split(chain[len(prefix) :])):
        if segment:
            ids = tokenizer.encode(segment)
            response += ids
            trained += [i % 2 == 0] * len(ids)  # odd pieces of the split are the document blocks
    response.append(tokenizer.eos_id)
    trained.append(True)
    return SFTExample((record.dataset, record.id), tuple(tokenizer.encode(prompt_text)), tuple(response),
                      tuple(trained))  # fmt: skip


def sft_examples(records: Sequence[QARecord], references: Mapping[tuple[str, str], Sequence[Reference]],
                 tokenizer: Tokenizer, style: PromptStyle, protocol: P.Protocol, *, max_searches: int,
                 max_length: int) -> tuple[list[SFTExample], Counter[str]]:  # fmt: skip
    """Every reference chain of `records`' questions as a row, in record order; returns the rows
    and, by reason, the chains left out (no question for them in the training data, too long for
    the largest bucket, or a search in a no-retrieval prompt, a prefix that does not fit)."""
    by_key = {(r.dataset, r.id): r for r in records}
    out: list[SFTExample] = []
    skipped: Counter[str] = Counter()
    skipped["no training question"] = sum(len(v) for k, v in references.items() if k not in by_key)
    for key, record in by_key.items():
        for ref in references.get(key, ()):
            if style.mode != "search" and P.SEARCH_OPEN in ref.chain:
                skipped["searches in a no-retrieval prompt"] += 1
                continue
            try:
                example = chain_example(record, ref.chain, tokenizer, style, protocol, max_searches=max_searches)
            except ChainError:
                skipped["prefix does not fit"] += 1
                continue
            if len(example) > max_length:
                skipped[f"longer than {max_length} tokens"] += 1
                continue
            out.append(example)
    return out, +skipped


def sft_batch(examples: Sequence[SFTExample], buckets: Sequence[int], pad_id: int) -> TrainBatch:
    """Rows right-padded to the smallest bucket that holds the longest (one compiled shape per
    bucket); loss on the chains' trained tokens only."""
    longest = max(map(len, examples))
    width = next(b for b in sorted(buckets) if b >= longest)
    rows = len(examples)
    tokens = np.full((rows, width), pad_id, np.int32)
    mask = np.zeros((rows, width), bool)
    loss_mask = np.zeros((rows, width), bool)
    for i, ex in enumerate(examples):
        n, p = len(ex), len(ex.prompt)
        tokens[i, :n] = ex.prompt + ex.response
        mask[i, :n] = True
        loss_mask[i, p:n] = ex.trained
    positions = np.tile(np.arange(width, dtype=np.int32), (rows, 1))
    zeros = np.zeros((rows, width), np.float32)
    return TrainBatch(tokens=tokens, positions=positions, mask=mask, loss_mask=loss_mask, old_logprobs=zeros,
                      advantages=np.zeros(rows, np.float32))  # fmt: skip


def step_rows(num_examples: int, rows: int, step: int, seed: int) -> tuple[np.ndarray, int]:
    """(example indices of `step`, its epoch): epochs of a seeded permutation each, read `rows`
    at a time across epoch ends, so step k's rows depend on (k, seed) only (exact resume)."""
    positions = np.arange(step * rows, (step + 1) * rows)
    epochs, index = np.divmod(positions, num_examples)
    orders = {int(e): np.random.default_rng([seed, int(e)]).permutation(num_examples) for e in np.unique(epochs)}
    return np.asarray([orders[int(e)][i] for e, i in zip(epochs, index)]), int(epochs[0])


def run_sft_stage(exp: Experiment, workdir: str, *, operative_config: str = "") -> str:
    """Runs (or resumes) a supervised stage under `workdir/<stage>`; returns its checkpoint dir."""
    # ---- inputs: the model, where to start, the chains
    log.info("[%s] workdir %s (supervised on reference chains)", exp.stage,
             fileio.absolute(fileio.join(workdir, exp.stage)))  # fmt: skip
    built = stage_model(exp, workdir)
    exp, stage_dir, mesh, shardings = built.exp, built.stage_dir, built.mesh, built.shardings
    model, tokenizer, checkpointer = built.model, built.tokenizer, built.checkpointer
    policy = PolicyTrainer(model, exp.optimizer, exp.update, mesh, objective="nll")
    start, _ = start_policy(exp, workdir, checkpointer, policy, shardings)
    records = train_records(exp)
    protocol = P.get_protocol(exp.protocol)
    path = reference_path(exp)
    if path is None:
        raise FileNotFoundError(f"{exp.stage}: Experiment.references={exp.references!r}: no reference chains found "
                                "(build them with `python -m medr3_jax.data.references`)")  # fmt: skip
    stats = ReferenceStats()
    examples, skipped = sft_examples(records, read_references(path, stats), tokenizer, exp.prompt, protocol,
                                     max_searches=exp.rollout.max_searches, max_length=max(exp.prompt_buckets))  # fmt: skip
    if skipped or sum(stats.bad_lines.values()):
        log.warning("[%s] reference chains left out: %s; bad lines: %s", exp.stage, dict(skipped),
                    dict(stats.bad_lines))  # fmt: skip
    if not examples:
        raise ValueError(f"{exp.stage}: no reference chain in {path} matches a question of Experiment.train_data "
                         f"{exp.train_data}")  # fmt: skip

    # ---- build: logs, and the evaluation's sampler (the policy's weights) and retriever
    writer = MetricWriter(fileio.join(stage_dir, "tb"))
    if operative_config:
        writer.text(start, "config/operative", operative_config)
    evaluation, sampler = None, None
    if exp.eval_every:
        sampler = Sampler(nnx.merge(policy.graphdef, policy.sampler_params()), tokenizer,
                          stop_strings=protocol.stop_strings(retrieval=exp.rollout.retrieval),
                          max_new_tokens=exp.rollout.max_response_tokens, mesh=mesh)  # fmt: skip
        retriever = open_retriever(exp, tokenizer) if exp.rollout.retrieval else None
        evaluation = stage_evaluation(exp, records, stage_dir, sampler, retriever, protocol)
        evaluation.protect_best(checkpointer)

    # ---- per step: rows -> update -> log -> checkpoint
    trained_tokens = sum(sum(ex.trained) for ex in examples)
    log.info("[%s] supervised steps %d..%d on %d chains (%d trained tokens), %d rows per step", exp.stage, start,
             exp.num_steps - 1, len(examples), trained_tokens, exp.prompts_per_step)  # fmt: skip
    with PreemptionWatch() as watch:
        for step in range(start, exp.num_steps):
            if evaluation is not None:
                evaluation.run_if_due(step, checkpointer, writer)
            t0 = time.perf_counter()
            rows, epoch = step_rows(len(examples), exp.prompts_per_step, step, exp.seed)
            batch = sft_batch([examples[i] for i in rows], exp.prompt_buckets, tokenizer.pad_id)
            metrics = policy.update(batch, seed=step)
            if sampler is not None:
                sampler.update_params(policy.sampler_params())
            metrics |= {"sft/epoch": float(epoch), "sft/trained_tokens": float(batch.loss_mask.sum()),
                        "perf/step_seconds": time.perf_counter() - t0}  # fmt: skip
            writer.scalars(step, metrics)
            log.info("[%s] step %d: nll %.4f, epoch %d, %.1fs", exp.stage, step, metrics["loss/nll"], epoch,
                     metrics["perf/step_seconds"])  # fmt: skip
            stop = step + 1 < exp.num_steps and watch.stop_requested(step + 1)  # SIGTERM on any host
            save_step(
                exp,
                step + 1,
                checkpointer,
                policy,
                evaluation,
                data_position=(step + 1) * exp.prompts_per_step,
                model=model,
                tokenizer=tokenizer,
                operative_config=operative_config,
                force=stop,
            )
            if stop:
                stop_preempted(step + 1, checkpointer, writer)
    return end_stage(exp, checkpointer, writer, evaluation)
