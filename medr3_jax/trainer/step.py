"""The policy update: one jitted step per minibatch (gradient accumulation over micro-batches
inside it), sharded over the mesh, that skips non-finite updates.

    policy = PolicyTrainer(model, OptimizerConfig(), UpdateConfig(), mesh, temperature=sampling.temperature)
    metrics = policy.update(batch, advantages)     # epochs x minibatches optimizer updates
    sampler.update_params(policy.sampler_params())

`PolicyTrainer(..., objective="nll")` trains by the mean negative log-likelihood of the
loss-mask tokens instead (the supervised cold start, `trainer.sft`), with the same accumulation,
sharding, master weights and non-finite skip.

The trainer keeps f32 master weights (`OptimizerConfig.master_dtype`) when the model's are
narrower: AdamW moves each weight by about the learning rate (Med-R3: 1e-6), far below the
spacing of bfloat16 numbers near typical weights (about 1e-4 at 0.03), so bf16 weights updated
in place never change. The forward casts the master weights to the compute dtype; the sampler
gets a copy in the model's own dtype.

`batch` is a `TrainBatch` (the rollout's arrays). Log-probs of token t come from the logits at
t-1; the loss mask is 1 only on sampled tokens, so prompts, documents and padding never train.
Log-probs are taken under softmax(logits / T) with the sampler's temperature
(`PolicyTrainer(..., temperature=T)`, 0 = greedy scores as 1): the sampler records the old
log-probs under that distribution, so scoring the raw logits would skew the PPO ratio at T != 1.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from medr3_jax.config_types import check_field_types
from medr3_jax.models.transformer import Decoder
from medr3_jax.rl import PolicyLossConfig, aggregate, chunked_token_logprobs_and_entropy, policy_loss
from medr3_jax.sharding.distributed import to_host
from medr3_jax.sharding.rules import batch_spec, fit_spec
from medr3_jax.trainer.checkpoints import train_state

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """AdamW with global-norm clipping (Med-R3: lr 1e-6, weight decay 0.01, clip 1.0)."""

    learning_rate: float = 1e-6
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0
    warmup_steps: int = 0  # linear warm-up, in optimizer updates
    schedule: Literal["constant", "cosine"] = "constant"
    decay_steps: int = 1000  # cosine: updates from peak to 0.1 x peak
    # Dtype of the weights the optimizer updates (and of its moments) when the model's are
    # narrower; None updates the model's own weights (bf16 on accelerators: small steps are lost).
    master_dtype: str | None = "float32"

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.learning_rate < 0 or self.grad_clip <= 0:
            raise ValueError("OptimizerConfig.learning_rate must be >= 0 (0 freezes the policy) and grad_clip > 0")
        if self.master_dtype not in (None, "float32"):
            raise ValueError(f"OptimizerConfig.master_dtype={self.master_dtype!r}: expected 'float32' or None")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"OptimizerConfig.schedule={self.schedule!r}: expected 'constant' or 'cosine'")

    def build(self) -> optax.GradientTransformation:
        if self.schedule == "cosine":
            lr = optax.warmup_cosine_decay_schedule(
                0.0, self.learning_rate, max(self.warmup_steps, 1), self.warmup_steps + self.decay_steps,
                end_value=0.1 * self.learning_rate,
            )  # fmt: skip
        elif self.warmup_steps:
            lr = optax.linear_schedule(0.0, self.learning_rate, self.warmup_steps)
        else:
            lr = self.learning_rate
        return optax.chain(
            optax.clip_by_global_norm(self.grad_clip),
            optax.adamw(lr, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpdateConfig:
    """epochs x minibatches optimizer updates per rollout batch; each minibatch's gradient is
    accumulated over micro-batches of `micro_batch` rows (None: the whole minibatch at once).
    recompute_old_logprobs: score old log-probs with the trainer's forward instead of taking
    the sampler's (their mismatch is logged either way on the first minibatch).
    logits_chunk: positions whose logits exist at once in the loss and log-prob passes (0: all
    of them); the [rows, width, vocab] f32 logits otherwise dominate memory at long widths."""

    epochs: int = 1
    minibatches: int = 1
    micro_batch: int | None = None
    recompute_old_logprobs: bool = False
    logits_chunk: int = 512
    loss: PolicyLossConfig = PolicyLossConfig()

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.epochs < 1 or self.minibatches < 1 or (self.micro_batch is not None and self.micro_batch < 1):
            raise ValueError("UpdateConfig.epochs, minibatches and micro_batch must be >= 1")
        if not isinstance(self.logits_chunk, int) or self.logits_chunk < 0:
            raise ValueError(f"UpdateConfig.logits_chunk={self.logits_chunk!r}: expected an int >= 0 (0: no chunks)")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainBatch:
    """[R, W] arrays of one rollout: tokens, positions, mask (real tokens), loss_mask (sampled
    tokens), old_logprobs (log-prob of each token under the sampling policy); advantages [R]."""

    tokens: jax.Array
    positions: jax.Array
    mask: jax.Array
    loss_mask: jax.Array
    old_logprobs: jax.Array
    advantages: jax.Array
    ref_logprobs: jax.Array | None = None  # [R, W] under the frozen reference; the trainer fills it

    def rows(self, index: np.ndarray) -> TrainBatch:
        return jax.tree.map(lambda x: x[index], self)


def sequence_logprobs(
    model: Decoder, batch: TrainBatch, temperature: float = 1.0, logits_chunk: int = 0
) -> tuple[jax.Array, jax.Array]:
    """log-prob and entropy [R, W] of each token given the ones before it (position 0: 0),
    under softmax(logits / temperature) in f32: the distribution the sampler scored its tokens
    under (`sampling.methods.token_logprobs`; 0 = greedy scores as 1, as there). The logits
    are made `logits_chunk` positions at a time (0: all at once)."""
    hidden, _ = model.hidden_states(batch.tokens, batch.positions, batch.mask)
    head = lambda x: model.logits(x) / (temperature or 1.0)  # noqa: E731  (as the sampler scales)
    logp, entropy = chunked_token_logprobs_and_entropy(head, hidden[:, :-1], batch.tokens[:, 1:], logits_chunk)
    pad = jnp.zeros_like(logp[:, :1])
    return jnp.concatenate([pad, logp], axis=1), jnp.concatenate([pad, entropy], axis=1)


def master_copy(params: nnx.State, dtype: str | None) -> nnx.State:
    """`params` with floating leaves narrower than `dtype` widened to it (same shardings);
    `params` itself when nothing is narrower or `dtype` is None."""
    if dtype is None:
        return params
    wide = jnp.dtype(dtype)
    widen = lambda x: jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize < wide.itemsize  # noqa: E731
    if not any(widen(x) for x in jax.tree.leaves(params)):
        return params
    return jax.jit(lambda p: jax.tree.map(lambda x: x.astype(wide) if widen(x) else x, p))(params)


class PolicyTrainer:
    """Parameters + optimizer state of the policy, and the jitted update (see module doc).

    temperature: the sampler's `SamplingParams.temperature` (0 = greedy: 1). Every log-prob the
    trainer takes (loss, recomputed old log-probs, KL reference) is under softmax(logits / T), so
    the PPO ratio starts at 1 where the sampler's log-probs match the policy.
    """

    def __init__(
        self,
        model: Decoder,
        optimizer: OptimizerConfig,
        update: UpdateConfig,
        mesh: Mesh | None = None,
        *,
        temperature: float = 1.0,
        objective: Literal["policy", "nll"] = "policy",
    ):
        if temperature < 0:
            raise ValueError(f"PolicyTrainer temperature must be >= 0 (0 = greedy, scored as 1), got {temperature}")
        if objective not in ("policy", "nll"):
            raise ValueError(f"PolicyTrainer objective={objective!r}: expected 'policy' or 'nll'")
        self.temperature = float(temperature) or 1.0
        self.objective = objective
        self.graphdef, params = nnx.split(model)
        self.model_dtypes = jax.tree.map(lambda x: x.dtype, params)  # what the sampler gets
        self.params = master_copy(params, optimizer.master_dtype)
        self.update_config, self.mesh = update, mesh
        self.tx = optimizer.build()
        self.opt_state = self.init_opt_state(self.params)
        self.reference: nnx.State | None = None  # frozen weights for the KL term (set_reference)
        self._step = jax.jit(self._step_impl, static_argnames=("micro",), donate_argnames=("params", "opt_state"))
        self._logprobs = jax.jit(self._logprobs_impl)
        self._to_model_dtypes = jax.jit(lambda p: jax.tree.map(lambda x, d: x.astype(d), p, self.model_dtypes))

    # ---- jitted bodies ------------------------------------------------------------------
    def _loss(self, params, batch: TrainBatch, weight: jax.Array):
        model = nnx.merge(self.graphdef, params)
        logp, entropy = sequence_logprobs(model, batch, self.temperature, self.update_config.logits_chunk)
        if self.objective == "nll":  # supervised: mean negative log-likelihood of the loss-mask tokens
            nll = aggregate(-logp, batch.loss_mask.astype(jnp.float32), "token-mean")
            return nll * weight, {"loss/nll": nll}
        cfg = self.update_config.loss
        loss, metrics = policy_loss(
            logp, batch.old_logprobs, batch.advantages, batch.loss_mask, cfg,
            ref_logp=batch.ref_logprobs, entropy=entropy if cfg.entropy_coef > 0 else None,
        )  # fmt: skip
        sampled = batch.loss_mask.astype(jnp.float32)
        metrics["train/logprob_mismatch"] = jnp.sum(jnp.abs(logp - batch.old_logprobs) * sampled) / jnp.maximum(
            sampled.sum(), 1.0
        )
        return loss * weight, metrics

    def _step_impl(self, params, opt_state, batch: TrainBatch, weights: jax.Array, micro: int):
        """One optimizer update over a minibatch, accumulated over `micro`-row slices."""
        split = jax.tree.map(lambda x: x.reshape((-1, micro) + x.shape[1:]), batch)
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)

        def accumulate(acc, xs):
            piece, weight = xs
            (loss, metrics), grads = grad_fn(params, piece, weight)
            acc_grads, acc_loss = acc
            return (jax.tree.map(jnp.add, acc_grads, grads), acc_loss + loss), metrics

        if weights.shape[0] == 1:  # one micro-batch: no accumulator (one gradient's memory less)
            (loss, metrics), grads = grad_fn(params, jax.tree.map(lambda x: x[0], split), weights[0])
        else:
            zeros = jax.tree.map(jnp.zeros_like, params)
            (grads, loss), metrics = jax.lax.scan(accumulate, (zeros, jnp.float32(0)), (split, weights))
            metrics = jax.tree.map(jnp.mean, metrics)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt = self.tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        metrics |= {"loss/total": loss, "train/grad_norm": grad_norm, "train/skipped": 1.0 - finite}
        return keep(new_params, params), keep(new_opt, opt_state), metrics

    def _logprobs_impl(self, params, batch: TrainBatch):
        """Old log-probs (recompute) or reference log-probs (KL), at the sampler's temperature."""
        model = nnx.merge(self.graphdef, params)
        return sequence_logprobs(model, batch, self.temperature, self.update_config.logits_chunk)[0]

    # ---- host API -----------------------------------------------------------------------
    def sampler_params(self) -> nnx.State:
        """The weights in the model's own dtypes (bf16 on accelerators), for the Sampler: the
        master weights themselves when those are the same, else a cast copy."""
        dtypes = jax.tree.leaves(jax.tree.map(lambda x: x.dtype, self.params))
        if dtypes == jax.tree.leaves(self.model_dtypes):
            return self.params
        return self._to_model_dtypes(self.params)

    def state(self) -> dict:
        """The checkpoint's "state" item: master weights and optimizer state."""
        return train_state(self.params, self.opt_state)

    def load_state(self, state: dict) -> None:
        """Takes a restored "state" item (in `restore_target(self.state())`'s structure)."""
        params = self.params
        nnx.replace_by_pure_dict(params, state["params"])
        self.params, self.opt_state = params, state["opt_state"]

    def set_reference(self, params: nnx.State) -> None:
        """Freezes a copy of `params` (same shardings) as π_ref of the KL term; the update's
        donated buffers never alias it. Costs one more set of parameters in device memory."""
        self.reference = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))(params)

    def init_opt_state(self, params: nnx.State):
        """Fresh optimizer state: moments sharded like their parameters, scalars (step counts)
        replicated over the mesh (so every argument of the step lives on the same devices)."""
        state = jax.jit(self.tx.init)(params)
        if self.mesh is None:
            return state
        replicated = NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        on_mesh = lambda x: isinstance(getattr(x, "sharding", None), NamedSharding)  # noqa: E731
        return jax.tree.map(lambda x: x if on_mesh(x) else jax.device_put(x, replicated), state)

    def put(self, batch: TrainBatch) -> TrainBatch:
        """Host arrays onto the mesh, rows sharded over data/fsdp."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, batch)
        return jax.tree.map(
            lambda x: jax.device_put(x, NamedSharding(self.mesh, fit_spec(batch_spec(x.ndim), x.shape, self.mesh))),
            batch,
        )

    def update(self, batch: TrainBatch, *, seed: int = 0) -> dict[str, float]:
        """epochs x minibatches updates over a rollout batch (rows shuffled per epoch by seed)."""
        cfg = self.update_config
        rows = batch.tokens.shape[0]
        if rows % cfg.minibatches:
            raise ValueError(f"{rows} rollout rows do not split into UpdateConfig.minibatches={cfg.minibatches}")
        size = rows // cfg.minibatches
        micro = cfg.micro_batch or size
        if size % micro:
            raise ValueError(f"minibatch of {size} rows does not split into micro_batch={micro} rows")
        if cfg.recompute_old_logprobs and self.objective == "policy":
            batch = dataclasses.replace(batch, old_logprobs=to_host(self._logprobs(self.params, self.put(batch))))
        if cfg.loss.kl_coef > 0 and self.objective == "policy":
            if self.reference is None:
                raise ValueError(
                    f"PolicyLossConfig.kl_coef={cfg.loss.kl_coef} > 0 but no reference: call set_reference"
                )
            batch = dataclasses.replace(batch, ref_logprobs=to_host(self._logprobs(self.reference, self.put(batch))))
        history: list[dict] = []
        rng = np.random.default_rng(seed)
        for epoch in range(cfg.epochs):
            order = rng.permutation(rows) if epoch or cfg.minibatches > 1 else np.arange(rows)
            for k in range(cfg.minibatches):
                part = batch.rows(order[k * size : (k + 1) * size])
                weights = self._micro_weights(np.asarray(part.loss_mask), micro)
                self.params, self.opt_state, metrics = self._step(
                    self.params, self.opt_state, self.put(part), jnp.asarray(weights), micro=micro
                )
                history.append(metrics)
        out = {k: float(np.mean([float(m[k]) for m in history])) for k in history[0]}
        out["train/skipped"] = float(sum(float(m["train/skipped"]) for m in history))
        if "train/logprob_mismatch" in history[0]:
            out["train/logprob_mismatch"] = float(history[0]["train/logprob_mismatch"])  # before any update
        out["train/updates"] = float(len(history))
        if out["train/skipped"]:
            log.warning("skipped %d non-finite update(s) of %d", int(out["train/skipped"]), len(history))
        return out

    def _micro_weights(self, loss_mask: np.ndarray, micro: int) -> np.ndarray:
        """Each micro-batch's share of the minibatch loss: tokens for token-mean, rows else."""
        pieces = loss_mask.reshape(-1, micro, loss_mask.shape[-1])
        if self.objective == "nll" or self.update_config.loss.aggregation == "token-mean":
            counts = pieces.sum(axis=(1, 2)).astype(np.float32)
        else:
            counts = np.full(len(pieces), micro, np.float32)
        return counts / max(counts.sum(), 1.0)
