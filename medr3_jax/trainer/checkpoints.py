"""Training checkpoints with orbax: exact resume, restore onto another mesh, params for export.

A checkpoint step holds two items: "state", a pytree of arrays
{"params": <Decoder params as a pure nested dict>, "opt_state": <optax state>} (`train_state`;
checkpoints written before 2026-12 also hold an "rng" item, which restore leaves unread: the
loop derives every seed from the step), and "meta", a JSON dict saying how to continue and how
the run was made (`checkpoint_meta`).

    ckpt = Checkpointer(f"{workdir}/{CHECKPOINT_SUBDIR}", CheckpointConfig(every_steps=50))
    meta = checkpoint_meta(step=step, stage="reasoning", data_position=pos, model_config=cfg,
                           tokenizer=tok.path, operative_config=gin.operative_config_str())
    ckpt.save(step, train_state(params, opt_state), meta)
    ...
    state, meta = ckpt.restore(abstract_state=restore_target(train_state(params, opt_state)))
    state, meta = ckpt.restore(abstract_state=abstract_train_state(cfg, tx, mesh))  # no live state
    model, meta = load_params_from_checkpoint(final_checkpoint(stage1_workdir))   # next stage

Layout on disk (orbax): `<dir>/<step>/state/...`, `<dir>/<step>/meta/...`. Every process calls
`save` (orbax writes each process's shards and lets process 0 write the metadata); only
process 0 logs. The directory may be a gs:// URL: Orbax writes and reads it itself (etils.epath
and tensorstore); our own checks around it (does a directory or an item exist) go through
`medr3_jax.fileio`, and a URL is never made absolute as a local path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from medr3_jax import fileio
from medr3_jax.config_types import check_field_types
from medr3_jax.models.config import ConfigError, ModelConfig, RopeScaling
from medr3_jax.models.hf import CheckpointError
from medr3_jax.models.transformer import Decoder, abstract_decoder, param_shapes
from medr3_jax.progress import waiting
from medr3_jax.sharding.distributed import all_processes, is_primary, sync
from medr3_jax.sharding.rules import tree_shardings

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"  # where a stage's workdir keeps its checkpoints
_STATE, _META = "state", "meta"
META_KEYS = ("step", "stage", "data_position", "model_config", "tokenizer", "operative_config")

ShardingsFn = Callable[[ModelConfig], Mapping[str, jax.sharding.Sharding]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """When and how checkpoints are written.

    every_steps: save at steps that are multiples of this (plus forced saves, e.g. the last).
    keep: how many of the newest checkpoints stay on disk.
    async_save: write in a background thread; `save` returns once arrays are on the host.
    max_failed_saves: a save that fails (a full disk, a lost mount) is logged and tried again at
    the next step; this many failures in a row stop the run with an error rather than train on
    without a checkpoint.
    """

    every_steps: int = 50
    keep: int = 3
    async_save: bool = True
    max_failed_saves: int = 3

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.every_steps < 1:
            raise ValueError(f"CheckpointConfig.every_steps must be >= 1, got {self.every_steps}")
        if self.keep < 1:
            raise ValueError(f"CheckpointConfig.keep must be >= 1, got {self.keep}")
        if self.max_failed_saves < 1:
            raise ValueError(f"CheckpointConfig.max_failed_saves must be >= 1, got {self.max_failed_saves}")


class TrainCheckpoint(NamedTuple):
    """A restored step: `state` (pytree of arrays) and `meta` (JSON dict). Unpacks as a pair."""

    state: dict[str, Any]
    meta: dict[str, Any]


# ---- meta -----------------------------------------------------------------------------------
def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """A JSON-able dict of a ModelConfig (nested RopeScaling as a dict, tuples as lists)."""
    out = dataclasses.asdict(config)
    out["eos_token_id"] = list(config.eos_token_id)
    return out


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Inverse of `config_to_dict`; unknown fields are an error (a newer checkpoint format)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"model_config has unknown fields {unknown}; known: {sorted(known)}")
    fields = dict(data)
    if fields.get("rope_scaling") is not None:
        fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
    if "eos_token_id" in fields:
        fields["eos_token_id"] = tuple(int(e) for e in fields["eos_token_id"])
    return ModelConfig(**fields)


def checkpoint_meta(
    *,
    step: int,
    stage: str,
    data_position: int,
    model_config: ModelConfig,
    tokenizer: str,
    operative_config: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """The meta dict a training checkpoint carries (`extra` must be JSON-able)."""
    return {
        "step": int(step),
        "stage": stage,
        "data_position": int(data_position),
        "model_config": config_to_dict(model_config),
        "tokenizer": os.fspath(tokenizer),
        "operative_config": operative_config,
        **extra,
    }


# ---- state and restore targets -----------------------------------------------------------
def train_state(params: nnx.State, opt_state: Any) -> dict[str, Any]:
    """The "state" item of a checkpoint: the params as a pure nested dict and the optimizer state."""
    return {"params": params.to_pure_dict(), "opt_state": opt_state}


def restore_target(state: Any) -> Any:
    """The restore target of a live state (e.g. `train_state` of a fresh trainer): each leaf's
    shape, dtype and sharding, so the restored arrays land where the live ones are."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def nest_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'layers/q_proj': x, ...} -> {'layers': {'q_proj': x}, ...} (the `nnx.to_pure_dict` shape)."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def abstract_params(config: ModelConfig, shardings: Mapping[str, jax.sharding.Sharding] | None = None) -> dict:
    """ShapeDtypeStructs of a Decoder's params as a pure nested dict, each with its sharding
    (`shardings[path]`, e.g. from `param_shardings(config, mesh)`; default: device 0)."""
    dtype = jnp.dtype(config.param_dtype)
    default = SingleDeviceSharding(jax.devices()[0])
    flat = {
        path: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[path] if shardings else default)
        for path, shape in param_shapes(config).items()
    }
    return nest_params(flat)


def abstract_train_state(
    config: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh | None = None
) -> dict[str, Any]:
    """The restore target for `Checkpointer.restore` without a live state: params and optimizer
    state sharded by the decoder rules on `mesh` (the optimizer's per-param leaves follow their
    param; counts are replicated). Without a mesh everything lives on device 0."""
    replicated = SingleDeviceSharding(jax.devices()[0]) if mesh is None else NamedSharding(mesh, PartitionSpec())

    def place(tree: Any) -> Any:
        shardings = jax.tree.map(lambda _: replicated, tree) if mesh is None else tree_shardings(tree, mesh)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

    params = place(abstract_params(config))
    return {"params": params, "opt_state": place(jax.eval_shape(tx.init, params))}


def _check_abstract(tree: Any) -> None:
    """Every leaf must say where it goes: restoring without a sharding would guess."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if getattr(leaf, "sharding", None) is None:
            raise ValueError(
                f"abstract_state leaf {jax.tree_util.keystr(path)} has no sharding; build it with "
                "jax.ShapeDtypeStruct(shape, dtype, sharding=...) (see abstract_train_state)"
            )


# ---- the checkpointer ------------------------------------------------------------------------
class Checkpointer:
    """Saves every `every_steps` steps (keeping the newest `keep`), restores exactly.

    ckpt = Checkpointer("/work/stage1/checkpoints", CheckpointConfig(every_steps=50, keep=3))
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(abstract_state=abstract_train_state(cfg, tx, mesh))
    ckpt.save(step, state, meta)          # False when the step is not due
    ckpt.close()                          # waits for an async save to finish
    """

    def __init__(
        self, directory: str | os.PathLike[str], config: CheckpointConfig | None = None, *, read_only: bool = False
    ):
        self.directory = fileio.absolute(os.fspath(directory))
        self.config = config or CheckpointConfig()
        self.read_only = read_only
        self._manager: ocp.CheckpointManager | None = None
        self._kept = _KeptSteps()
        self.failed_saves = 0  # in a row; reset by a save that commits
        self._pending: int | None = None  # the step of an async save not yet known to have committed
        self._retry = False  # the last save failed: save at the next call whatever the step
        if not read_only or fileio.isdir(self.directory):
            keep = [ocp.checkpoint_managers.LatestN(n=self.config.keep), self._kept]
            options = ocp.CheckpointManagerOptions(
                preservation_policy=None if read_only else ocp.checkpoint_managers.AnyPreservationPolicy(keep),
                enable_async_checkpointing=self.config.async_save and not read_only,
                save_interval_steps=0 if read_only else 1,  # the gating is ours (`every_steps`, `force`)
                create=not read_only,
                read_only=read_only,
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- queries --
    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps()) if self._manager else []

    def latest_step(self) -> int | None:
        """The newest complete step, or None when the directory is missing or empty."""
        return self._manager.latest_step() if self._manager else None

    def step_dir(self, step: int) -> str:
        return fileio.join(self.directory, str(step))

    def keep_also(self, steps: Iterable[int]) -> None:
        """Besides the newest `keep`, these steps stay on disk (e.g. the best by evaluation);
        replaces the previous set. Takes effect at the next save, when old steps are removed."""
        self._kept.steps = {int(s) for s in steps}

    # -- save --
    def save(self, step: int, state: Any, meta: Mapping[str, Any], *, force: bool = False) -> bool:
        """Saves when `step % every_steps == 0` or `force`; True when a save was started.

        `meta["step"]` is set to `step`. With async saving this returns once the arrays are
        copied to the host, so the caller may donate / overwrite them right after.
        """
        if self._manager is None or self.read_only:
            raise CheckpointError(f"{self.directory}: checkpointer is read-only")
        self._check_pending()
        if not force and not self._retry and step % self.config.every_steps:
            return False
        if step in self._manager.all_steps():
            _log("checkpoint %s already exists; not saving again", self.step_dir(step))
            return False
        meta = {**meta, "step": int(step)}
        try:
            json.dumps(meta)
        except TypeError as err:
            raise TypeError(f"checkpoint meta for step {step} is not JSON-able: {err}") from None
        try:
            saved = self._manager.save(
                step,
                args=ocp.args.Composite(**{_STATE: ocp.args.PyTreeSave(state), _META: ocp.args.JsonSave(meta)}),
                force=True,
            )
        except Exception as err:  # noqa: BLE001 -- a full disk, permissions, a lost mount: counted, retried
            self._failed(step, err)
            return False
        if saved:
            _log("saving checkpoint %s%s", self.step_dir(step), " (async)" if self.config.async_save else "")
            self._pending, self._retry = step, False
            if not self.config.async_save:
                self._check_pending()
        return bool(saved)

    def _check_pending(self) -> None:
        """Settles the last save: an async one that failed counts as a failure (and the next call
        saves); one that committed resets the count."""
        if self._pending is None:
            return
        step = self._pending
        if self.config.async_save and self._manager.is_saving_in_progress():
            return
        self._pending = None
        try:
            self._manager.check_for_errors()
        except Exception as err:  # noqa: BLE001 -- the background save's own error
            self._failed(step, err)
            return
        self.failed_saves = 0

    def _failed(self, step: int, err: BaseException) -> None:
        self.failed_saves += 1
        self._retry = True
        latest = self.latest_step()
        if self.failed_saves >= self.config.max_failed_saves:
            raise CheckpointError(
                f"{self.directory}: {self.failed_saves} checkpoint saves in a row failed (the last, step {step}: "
                f"{type(err).__name__}: {err}); stopping rather than training on without a checkpoint "
                f"(CheckpointConfig.max_failed_saves). Free space or fix the directory, then rerun to resume from "
                f"{'step ' + str(latest) if latest is not None else 'the start'}"
            ) from err
        log.warning("checkpoint step %d not saved (%s: %s); %d failed in a row, trying again at the next step "
                    "(the run stops after %d)", step, type(err).__name__, err, self.failed_saves,
                    self.config.max_failed_saves)  # fmt: skip

    # -- restore --
    def _resolve(self, step: int | None) -> int:
        latest = self.latest_step()
        if latest is None:
            raise CheckpointError(f"{self.directory}: no checkpoint found (missing or empty directory)")
        if step is None:
            return latest
        if step not in self._manager.all_steps():
            raise CheckpointError(f"{self.directory}: no checkpoint for step {step}; steps: {self.all_steps()}")
        return step

    def restore_latest_good(self, *, abstract_state: Any) -> TrainCheckpoint | None:
        """The newest step that restores (None when there is none at all). A newer step that
        cannot be restored (a truncated file, a missing item: a writer killed mid-save, a partial
        copy) is logged with the reason and moved aside to `<directory>.unrestorable/<step>-<time>`,
        never deleted, and the step before it is tried; every process takes the same decision.
        CheckpointError when no step restores."""
        aside: list[str] = []
        for step in sorted(self.all_steps(), reverse=True):
            error = None
            try:
                restored = self.restore(step, abstract_state=abstract_state)
            except CheckpointError as err:
                error = err
            if all_processes(error is None):
                if aside:
                    _log("resuming from step %d, the newest checkpoint that restores", step)
                return restored
            where = self._set_aside(step)
            aside.append(where)
            log.warning("checkpoint step %d cannot be restored (%s); moved aside to %s (kept), trying the step "
                        "before it", step, error or "failed on another process", where)  # fmt: skip
        if aside:
            raise CheckpointError(f"{self.directory}: no checkpoint could be restored; the broken ones are kept in "
                                  f"{', '.join(aside)}")  # fmt: skip
        return None

    def _set_aside(self, step: int) -> str:
        """Moves step `step`'s directory out of the manager's sight (process 0), then every
        process rereads the step list."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        where = fileio.join(f"{self.directory}.unrestorable", f"{step}-{stamp}")
        if is_primary():
            fileio.makedirs(f"{self.directory}.unrestorable")
            fileio.replace(self.step_dir(step), where)
        sync(f"checkpoint_aside_{step}")
        self._manager.reload()
        return where

    def _check_items(self, step: int, items: tuple[str, ...]) -> None:
        folder = self.step_dir(step)
        for item in items:
            if not fileio.isdir(fileio.join(folder, item)):
                raise CheckpointError(f"{folder}: broken checkpoint, item {item!r} is missing (partial write?)")

    def restore_meta(self, step: int | None = None) -> dict[str, Any]:
        """Only the meta dict of `step` (default: latest)."""
        step = self._resolve(step)
        self._check_items(step, (_META,))
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))
        except Exception as err:  # orbax raises many kinds; name the folder in one
            raise CheckpointError(f"{self.step_dir(step)}: cannot read checkpoint meta: {err}") from err
        meta = out[_META]
        if not isinstance(meta, dict):
            raise CheckpointError(f"{self.step_dir(step)}: checkpoint meta is not a JSON object")
        return meta

    def restore(self, step: int | None = None, *, abstract_state: Any) -> TrainCheckpoint:
        """State and meta of `step` (default: latest). `abstract_state` is a pytree of
        `jax.ShapeDtypeStruct` with `.sharding` set, in the saved structure: arrays land on those
        shardings, whatever mesh wrote them (see `restore_target`, `abstract_train_state`). Saved
        entries the target leaves out are not read (an older checkpoint's "rng")."""
        _check_abstract(abstract_state)
        step = self._resolve(step)
        self._check_items(step, (_STATE, _META))
        state = ocp.args.PyTreeRestore(item=abstract_state, partial_restore=True,
                                       restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))  # fmt: skip
        args = ocp.args.Composite(**{_STATE: state, _META: ocp.args.JsonRestore()})
        try:
            with waiting(f"restoring checkpoint {self.step_dir(step)}"):
                out = self._manager.restore(step, args=args)
        except Exception as err:
            raise CheckpointError(f"{self.step_dir(step)}: cannot restore checkpoint: {err}") from err
        _log("restored checkpoint %s", self.step_dir(step))
        return TrainCheckpoint(state=out[_STATE], meta=out[_META])

    def restore_params(self, step: int | None = None, *, abstract_params: Any) -> dict[str, Any]:
        """Only `state["params"]` (optimizer state is not read): for export and stage chaining."""
        _check_abstract(abstract_params)
        step = self._resolve(step)
        self._check_items(step, (_STATE,))
        item = {"params": abstract_params}
        restore = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        )
        try:
            with waiting(f"restoring parameters from {self.step_dir(step)}"):
                out = self._manager.restore(step, args=ocp.args.Composite(**{_STATE: restore}))
        except Exception as err:
            raise CheckpointError(f"{self.step_dir(step)}: cannot restore params: {err}") from err
        return out[_STATE]["params"]

    # -- lifecycle --
    def wait(self) -> None:
        """Blocks until an async save has been committed; CheckpointError when the last save
        failed (a run must not end, or be evaluated, on a checkpoint that is not there)."""
        if self._manager is None:
            return
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001 -- the background save's error, settled below
            if self._pending is not None:
                step, self._pending = self._pending, None
                self._failed(step, err)
        self._check_pending()
        if self._retry and not self.read_only:
            latest = self.latest_step()
            raise CheckpointError(f"{self.directory}: the last checkpoint save failed (see the warnings above); "
                                  f"the newest checkpoint there is step {latest}")  # fmt: skip

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


@dataclasses.dataclass
class _KeptSteps:
    """An orbax preservation policy: keep the checkpoints at `steps` (mutable: the best step
    changes as training goes)."""

    steps: set[int] = dataclasses.field(default_factory=set)

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        return [c.step in self.steps for c in checkpoints]


def _log(msg: str, *args: Any) -> None:
    if is_primary():
        log.info(msg, *args)


# ---- chaining stages and loading params ------------------------------------------------------
def _checkpoint_root(path: str) -> str:
    """A stage workdir holding `checkpoints/`, or the checkpoint directory itself."""
    sub = fileio.join(path, CHECKPOINT_SUBDIR)
    return sub if fileio.isdir(sub) else path


def final_checkpoint(workdir_of_stage: str | os.PathLike[str]) -> str | None:
    """Path of the latest step directory (`.../checkpoints/<step>`) of a stage, or None."""
    root = _checkpoint_root(fileio.absolute(os.fspath(workdir_of_stage)))
    if not fileio.isdir(root):
        return None
    ckpt = Checkpointer(root, read_only=True)
    try:
        step = ckpt.latest_step()
        return None if step is None else ckpt.step_dir(step)
    finally:
        ckpt.close()


_STAGE_DIR = re.compile(r"^stage(\d+)$")


def saved_steps(root: str) -> list[int]:
    """The finished steps under a checkpoint directory, by name (Orbax writes a step under a
    temporary name and renames it when done), read through `fileio`: local or remote."""
    return sorted(int(n) for n in fileio.listdir(root) if n.isdigit()) if fileio.isdir(root) else []


def resolve_checkpoint(path: str | os.PathLike[str]) -> str:
    """What a `--checkpoint` names, local or remote (gs://, through `fileio`): a training workdir
    (stage0/, stage1/, ... inside) gives the `checkpoints/` directory of its highest-numbered stage
    that holds a step (`load_params_from_checkpoint` then takes its latest step, or the one asked
    for); a stage workdir, a checkpoint directory or one step directory is returned as it is."""
    path = fileio.absolute(os.path.expanduser(os.fspath(path)))
    if not fileio.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory")
    if fileio.isdir(fileio.join(path, CHECKPOINT_SUBDIR)) or fileio.isdir(fileio.join(path, _STATE)):
        return path
    stages = sorted((int(m.group(1)), n) for n in fileio.listdir(path) if (m := _STAGE_DIR.match(n)))
    stages = [name for _, name in stages if fileio.isdir(fileio.join(path, name))]
    for name in reversed(stages):
        root = fileio.join(path, name, CHECKPOINT_SUBDIR)
        steps = saved_steps(root)
        if steps:
            log.info("%s: a run workdir; taking %s (the latest stage with checkpoints; its latest step is %d)",
                     path, name, steps[-1])  # fmt: skip
            return root
    if stages:
        raise CheckpointError(f"{path}: a run workdir whose stages ({', '.join(stages)}) hold no checkpoint "
                              f"under {CHECKPOINT_SUBDIR}/")  # fmt: skip
    return path


def _split_step_dir(path: str, step: int | None) -> tuple[str, int | None]:
    """A step directory `<root>/<n>` (holding a 'state' item) -> (root, n); otherwise unchanged."""
    name = os.path.basename(path.rstrip(os.sep))
    if name.isdigit() and fileio.isdir(fileio.join(path, _STATE)):
        if step is not None and step != int(name):
            raise CheckpointError(f"{path}: is the checkpoint of step {name}, but step {step} was asked for")
        return os.path.dirname(path.rstrip(os.sep)), int(name)
    return _checkpoint_root(path), step


def checkpoint_root(checkpoint_dir: str | os.PathLike[str]) -> str:
    """The checkpoint directory (`<stage>/checkpoints`) of anything `load_params_from_checkpoint`
    accepts: a stage workdir, the checkpoint directory itself or one step directory."""
    root, _ = _split_step_dir(fileio.absolute(os.fspath(checkpoint_dir)), None)
    return root


def step_directory(checkpoint_dir: str | os.PathLike[str], step: int) -> str:
    """The directory of `step` under anything `load_params_from_checkpoint` accepts."""
    root, _ = _split_step_dir(fileio.absolute(os.fspath(checkpoint_dir)), step)
    return fileio.join(root, str(step))


def load_params_from_checkpoint(
    checkpoint_dir: str | os.PathLike[str], *, step: int | None = None, shardings_fn: ShardingsFn | None = None
) -> tuple[Decoder, dict[str, Any]]:
    """A Decoder with the params of a training checkpoint, and the checkpoint's meta.

    `checkpoint_dir` is a checkpoint directory (latest step, or `step`), one step directory
    (as `final_checkpoint` returns) or a stage workdir. The model is built from
    meta["model_config"]; params go to `shardings_fn(config)` ({param path: sharding},
    e.g. `lambda c: param_shardings(c, mesh)`), default device 0. Optimizer state is not read.
    """
    path = fileio.absolute(os.fspath(checkpoint_dir))
    root, step = _split_step_dir(path, step)
    if not fileio.isdir(root):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    ckpt = Checkpointer(root, read_only=True)
    try:
        meta = ckpt.restore_meta(step)
        if "model_config" not in meta:
            raise CheckpointError(f"{ckpt.step_dir(meta.get('step', step))}: checkpoint meta has no model_config")
        config = config_from_dict(meta["model_config"])
        step = int(meta.get("step", step if step is not None else ckpt.latest_step()))
        target = abstract_params(config, shardings_fn(config) if shardings_fn else None)
        params = ckpt.restore_params(step, abstract_params=target)
    finally:
        ckpt.close()
    graphdef, state = abstract_decoder(config)
    nnx.replace_by_pure_dict(state, params)
    _log("loaded params of %s (step %d)", fileio.join(root, str(step)), step)
    return nnx.merge(graphdef, state), meta
