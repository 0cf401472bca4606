"""Training: orbax checkpoints (exact resume, restore onto another mesh, params for export)
and TensorBoard metrics without TensorFlow."""

from medr3_jax.trainer.checkpoints import (
    CHECKPOINT_SUBDIR,
    CheckpointConfig,
    Checkpointer,
    TrainCheckpoint,
    abstract_params,
    abstract_train_state,
    checkpoint_meta,
    config_from_dict,
    config_to_dict,
    final_checkpoint,
    load_params_from_checkpoint,
    restore_target,
    train_state,
)
from medr3_jax.trainer.metrics import MetricWriter, read_scalars, read_texts

__all__ = [
    "CHECKPOINT_SUBDIR",
    "CheckpointConfig",
    "Checkpointer",
    "MetricWriter",
    "TrainCheckpoint",
    "abstract_params",
    "abstract_train_state",
    "checkpoint_meta",
    "config_from_dict",
    "config_to_dict",
    "final_checkpoint",
    "load_params_from_checkpoint",
    "read_scalars",
    "read_texts",
    "restore_target",
    "train_state",
]
