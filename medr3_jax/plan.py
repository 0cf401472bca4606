"""Per-device memory of each training stage, from shapes alone: `python -m medr3_jax.plan
--gin_file=gin/stage3.gin --gin_file=gin/models/llama3_1_8b_instruct.gin --gin_file=gin/scale/paper.gin
--gin_file=gin/mesh/v5e_256.gin --model llama3_1_8b_instruct --device_kind v5e [--json]`.

Gin is parsed as `medr3_jax.train` parses it and each stage of `run.stages` builds its Experiment;
no weight is allocated and no device is needed, so a laptop plans a 256-chip pod. Each array's
largest shard on one device comes from the partition rules (`sharding.rules`: `spec_for`,
`fit_spec`, `kv_cache_spec`) applied to an `AbstractMesh` of the mesh sizes. Counted per device:

  resident  parameters; AdamW state (mu + nu in the parameter dtype, int32 step counts);
            the exact backend's embedding table (rows over every device, in its stored float16 /
            bfloat16: ExactIndex keeps it so and widens each block to f32 as it scores it)
  rollout   the KV cache of one rollout batch (k + v [L, rows, slots, K, H], valid, length)
  update    one micro-batch's gradient, + the gradient accumulator (the scan carry) when a
            minibatch has several micro-batches

The KV cache is dropped before the update, so peak = resident + max(rollout, update); total adds
all of it. Not counted: activations (one line gives, for scale, the f32 logits of one micro-batch slice of
UpdateConfig.logits_chunk positions: what exists of them at once),
XLA temporaries, the retrieval encoder (a few hundred MB on one device), host memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import math
import os
import sys
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

import gin
from medr3_jax.cli import ArgumentParser, entry_point, error_line
from medr3_jax.models.config import PRESETS, ModelConfig
from medr3_jax.models.transformer import abstract_decoder, kv_cache_shapes
from medr3_jax.remote import is_remote, stage
from medr3_jax.sampling.sampler import CACHE_ROUNDING, PROMPT_BUCKETS, bucket
from medr3_jax.sharding.mesh import MESH_AXES, parse_mesh_spec
from medr3_jax.sharding.rules import (
    BATCH_AXES,
    KV_CACHE_SPEC,
    batch_spec,
    fit_spec,
    kv_cache_spec,
    path_to_str,
    spec_for,
)
from medr3_jax.train import STAGES, parse_gin, run, stage_experiment
from medr3_jax.trainer.experiment import Experiment
from medr3_jax.trainer.step import master_copy

GiB = 2**30
HBM_GIB: dict[str, float] = {"v4": 32, "v5e": 16, "v5p": 95, "h100": 80}  # per chip
PLANNED_DTYPE = "bfloat16"  # Experiment.param_dtype=None means bfloat16 on accelerators (run_stage)
EXACT_BLOCK_ROWS = 4096  # ExactIndex.build's default block
TABLE_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}  # embed.DTYPES, + float32 tables
_UNIT_MESH = AbstractMesh((1,) * len(MESH_AXES), MESH_AXES)  # every rule applies undropped


@dataclasses.dataclass(frozen=True)
class Line:
    """One group of arrays: its largest shard on one device and its unsharded size, in bytes."""

    key: str
    label: str
    phase: str  # "resident" | "rollout" | "update"
    per_device: int
    unsharded: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class StagePlan:
    """The memory plan of one stage on one mesh (see module doc)."""

    stage: str
    model: str
    num_params: int
    dtype: str
    mesh: dict[str, int]
    lines: tuple[Line, ...]
    logits_per_device: int  # f32 logits of one micro-batch, for scale: not in peak or total
    shapes: dict[str, Any]
    notes: tuple[str, ...]

    @property
    def devices(self) -> int:
        return math.prod(self.mesh.values())

    def phase(self, name: str) -> int:
        return sum(line.per_device for line in self.lines if line.phase == name)

    @property
    def peak(self) -> int:
        return self.phase("resident") + max(self.phase("rollout"), self.phase("update"))

    @property
    def total(self) -> int:
        return sum(line.per_device for line in self.lines)

    def as_json(self) -> dict[str, Any]:
        items = {
            line.key: {"phase": line.phase, "per_device": line.per_device, "unsharded": line.unsharded}
            for line in self.lines
        }
        return {
            "stage": self.stage,
            "model": self.model,
            "num_params": self.num_params,
            "dtype": self.dtype,
            "mesh": self.mesh,
            "devices": self.devices,
            "items": items,
            "peak": self.peak,
            "total": self.total,
            "logits_per_device": self.logits_per_device,
            "shapes": self.shapes,
            "notes": list(self.notes),
        }


# ---- shard arithmetic ---------------------------------------------------------------------------
def abstract_mesh(sizes: dict[str, int]) -> AbstractMesh:
    return AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES)


def _axes(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def shard_bytes(shape: Sequence[int], dtype: Any, spec: P, mesh: AbstractMesh) -> int:
    """Bytes of the largest shard of an array of `shape` laid out by `spec`: a dim split over
    axes (a, b) holds ceil(dim / (size(a) * size(b))) entries on the first device."""
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    n = np.dtype(dtype).itemsize
    for dim, entry in zip(shape, entries):
        n *= -(-dim // math.prod(mesh.shape[a] for a in _axes(entry)))
    return n


def tree_bytes(tree: Any, mesh: AbstractMesh) -> tuple[int, int]:
    """(largest shard per device, unsharded) bytes of a pytree of ShapeDtypeStructs under the
    decoder rules (parameter paths, or optimizer-state paths that end in one)."""
    per_device = unsharded = 0
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        spec = spec_for(path_to_str(key_path), leaf.shape, mesh)
        per_device += shard_bytes(leaf.shape, leaf.dtype, spec, mesh)
        unsharded += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    return per_device, unsharded


def dropped_axes(name: str, shape: Sequence[int], rule: P, fitted: P, mesh: AbstractMesh) -> list[str]:
    """Notes for the dims where fit_spec dropped mesh axes (the dim is replicated over them)."""
    notes = []
    for dim, (want, got) in enumerate(zip(rule, fitted)):
        lost = [a for a in _axes(want) if a not in _axes(got) and mesh.shape[a] > 1]
        if lost:
            ways = math.prod(mesh.shape[a] for a in _axes(want))
            notes.append(
                f"{name}: dim {dim} ({shape[dim]}) does not split {ways} ways over {_axes(want)}; "
                f"replicated over {tuple(lost)} (fit_spec)"
            )
    return notes


# ---- the plan -----------------------------------------------------------------------------------
def plan_stage(
    exp: Experiment, config: ModelConfig, sizes: dict[str, int], index: tuple[int, int] | None, *, model: str = ""
) -> StagePlan:
    """The memory plan of `exp` with model `config` on a mesh of `sizes`; index = the exact
    backend's table (rows, dim), None when the stage keeps none on device."""
    mesh = abstract_mesh(sizes)
    state, notes = state_lines(exp, config, mesh)
    kv, kv_shape, kv_notes = kv_cache_line(exp, config, mesh)
    logits, logits_shape, batch_notes = micro_batch_logits(exp, config, mesh)
    table = index_line(exp, index, mesh)
    resident = [line for line in state if line.phase == "resident"]
    lines = resident + ([table] if table else []) + [kv] + [line for line in state if line.phase != "resident"]
    return StagePlan(
        stage=exp.stage,
        model=model or config.family,
        num_params=config.num_params,
        dtype=config.param_dtype,
        mesh=dict(sizes),
        lines=tuple(lines),
        logits_per_device=logits,
        shapes={"kv_cache": kv_shape, "logits": logits_shape},
        notes=tuple(notes + kv_notes + batch_notes),
    )


def state_lines(exp: Experiment, config: ModelConfig, mesh: AbstractMesh) -> tuple[list[Line], list[str]]:
    """Parameters (and their f32 master copy when the model's are narrower) and AdamW state
    (resident), then the update's gradient accumulator (the micro-batch scan carry,
    zeros_like(master), only when a minibatch has several micro-batches) and one micro-batch's
    gradient (trainer/step.py)."""
    _, params = abstract_decoder(config)
    master = jax.eval_shape(lambda p: master_copy(p, exp.optimizer.master_dtype), params)
    opt_state = jax.eval_shape(exp.optimizer.build().init, master)
    p_dev, p_all = tree_bytes(params, mesh)
    m_dev, m_all = tree_bytes(master, mesh)
    o_dev, o_all = tree_bytes(opt_state, mesh)
    counts = sum(1 for leaf in jax.tree.leaves(opt_state) if leaf.ndim == 0)
    lines = [Line("parameters", f"parameters ({config.param_dtype})", "resident", p_dev, p_all)]
    if m_all != p_all:
        lines.append(Line("master_parameters", f"master weights ({exp.optimizer.master_dtype})", "resident",
                          m_dev, m_all))  # fmt: skip
    lines += [
        Line("optimizer_state", f"optimizer state (AdamW mu+nu, int32 counts: {counts})", "resident", o_dev, o_all),
        Line("micro_batch_grad", "gradient of one micro-batch", "update", m_dev, m_all),
    ]
    minibatch = rollout_rows(exp) // exp.update.minibatches
    if (exp.update.micro_batch or minibatch) < minibatch:  # several micro-batches: a scan carry too
        lines.insert(-1, Line("grad_accumulator", "gradient accumulator (micro-batch scan carry)", "update",
                              m_dev, m_all))  # fmt: skip
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return lines, [note for path, leaf in flat for note in _param_drops(path_to_str(path), leaf.shape, mesh)]


def _param_drops(path: str, shape: Sequence[int], mesh: AbstractMesh) -> list[str]:
    return dropped_axes(path, shape, spec_for(path, shape, _UNIT_MESH), spec_for(path, shape, mesh), mesh)


def rollout_rows(exp: Experiment) -> int:
    return exp.prompts_per_step * exp.rollout.group_size


def kv_cache_slots(exp: Experiment) -> int:
    """Slots per row as the rollout sizes the cache: the sampler's bucket of the longest prompt
    (the largest prompt bucket) + max_response_tokens + 1, rounded up to CACHE_ROUNDING."""
    width = bucket(max(exp.prompt_buckets), PROMPT_BUCKETS)
    return -(-(width + exp.rollout.max_response_tokens + 1) // CACHE_ROUNDING) * CACHE_ROUNDING


def kv_cache_bytes(
    config: ModelConfig, rows: int, slots: int, mesh: AbstractMesh
) -> tuple[int, int, tuple[int, ...], P]:
    """(per device, unsharded) bytes of a KV cache of `rows` x `slots` (a multiple of KV_BLOCK):
    k + v in the compute dtype, valid [rows, slots] bool, length [rows] int32; and the values'
    shape and spec."""
    _, shape = kv_cache_shapes(config, rows, slots)
    spec = kv_cache_spec(shape, mesh)
    per_device = 2 * shard_bytes(shape, config.compute_dtype, spec, mesh)
    per_device += shard_bytes((rows, slots), np.bool_, fit_spec(batch_spec(2), (rows, slots), mesh), mesh)
    per_device += shard_bytes((rows,), np.int32, fit_spec(batch_spec(1), (rows,), mesh), mesh)
    unsharded = 2 * math.prod(shape) * np.dtype(config.compute_dtype).itemsize + rows * slots + 4 * rows
    return per_device, unsharded, shape, spec


def kv_cache_line(exp: Experiment, config: ModelConfig, mesh: AbstractMesh) -> tuple[Line, list[int], list[str]]:
    """k + v in the compute dtype, plus valid [rows, slots] and length [rows]. Shown as the
    values' shape [L, rows, K, slots, H]; the keys [L, rows, K, H, slots] are as large and
    sharded the same way (batch and kv-head axes)."""
    rows, slots = rollout_rows(exp), kv_cache_slots(exp)
    per_device, unsharded, shape, spec = kv_cache_bytes(config, rows, slots, mesh)
    line = Line("kv_cache", f"KV cache ({rows} rows x {slots} slots, k+v {config.compute_dtype})", "rollout",
                per_device, unsharded)  # fmt: skip
    return line, list(shape), dropped_axes("kv_cache", shape, KV_CACHE_SPEC, spec, mesh)


def index_line(exp: Experiment, index: tuple[int, int, str] | None, mesh: AbstractMesh) -> Line | None:
    """The exact backend's table: rows padded to devices x blocks (ExactIndex.from_rows), in the
    dtype the index stores (embed's float16 by default)."""
    if index is None:
        return None
    rows, dim, dtype = index
    width = TABLE_DTYPE_BYTES[dtype]
    devices = mesh.size
    per = -(-rows // devices)
    block = max(1, min(EXACT_BLOCK_ROWS, per))
    per = -(-per // block) * block
    label = f"embedding table ({rows} x {dim} {dtype}, {exp.retrieval_backend})"
    return Line("embedding_table", label, "resident", per * dim * width, rows * dim * width)


def micro_batch_logits(exp: Experiment, config: ModelConfig, mesh: AbstractMesh) -> tuple[int, list[int], list[str]]:
    """f32 logits [micro, C, V] that exist at once in the update (rows over data x fsdp, V over
    tensor where they divide): C = UpdateConfig.logits_chunk positions, or the whole width W
    (longest prompt + response rounded to sequence_bucket) when that is 0 or smaller. For scale only."""
    rows = rollout_rows(exp)
    minibatch = rows // exp.update.minibatches
    micro = exp.update.micro_batch or minibatch
    width = exp.rollout.sequence_bucket
    tokens = -(-(max(exp.prompt_buckets) + exp.rollout.max_response_tokens) // width) * width
    chunk = exp.update.logits_chunk
    shape = (micro, min(chunk, tokens) if chunk > 0 else tokens, config.vocab_size)
    spec = fit_spec(P(BATCH_AXES, None, "tensor"), shape, mesh, "logits")
    shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
    notes = []
    checks = [
        ("rollout batch", rows, "Experiment.prompts_per_step"),
        ("minibatch", minibatch, "UpdateConfig.minibatches"),
        ("micro-batch", micro, "UpdateConfig.micro_batch"),
    ]
    if minibatch % micro:
        notes.append(
            f"UpdateConfig.micro_batch={micro} does not divide the minibatch of {minibatch} rows "
            f"(rollout {rows} / UpdateConfig.minibatches={exp.update.minibatches}): the trainer refuses it"
        )
    for what, n, knob in checks:
        if n % shards:
            notes.append(
                f"{what} of {n} rows does not split over data x fsdp = {shards}: fit_spec drops batch "
                f"axes, so shards repeat the same rows (adjust {knob})"
            )
    return shard_bytes(shape, np.float32, spec, mesh), list(shape), notes


# ---- inputs: gin, model, index, mesh ---------------------------------------------------------------
def stage_experiments() -> list[Experiment]:
    """Each stage of `run.stages`, built as `train.run` builds it: inside its gin scope."""
    try:
        stages = gin.query_parameter("medr3.run.stages")
    except ValueError:  # run has no bound parameters: its Python default
        stages = inspect.signature(run).parameters["stages"].default
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"run.stages: unknown stage(s) {unknown}; expected some of {STAGES}")
    return [stage_experiment(stage) for stage in stages]


def resolve_model(exp: Experiment, preset_name: str | None) -> tuple[ModelConfig, str]:
    """The model's config without its weights: --model, a preset, an HF dir's config.json or a
    .gguf header; in the dtype run_stage uses (Experiment.param_dtype, bfloat16 when unset)."""
    dtype = exp.param_dtype or PLANNED_DTYPE
    name = preset_name or exp.model.removeprefix("random:")
    if name in PRESETS:
        return PRESETS[name].replace(param_dtype=dtype, compute_dtype=dtype), name
    if preset_name:
        raise ValueError(f"--model {preset_name!r}: not a preset; known: {sorted(PRESETS)}")
    path = os.path.expanduser(exp.model)
    if is_remote(path) and not path.endswith(".gguf"):  # an HF directory in a bucket: its config alone
        path = os.path.dirname(stage(path.rstrip("/") + "/config.json", knob="Experiment.model"))
    if os.path.isfile(os.path.join(path, "config.json")):
        return ModelConfig.from_hf_dir(path, param_dtype=dtype, compute_dtype=dtype), path
    if path.endswith(".gguf") and os.path.isfile(path):
        from medr3_jax.models.gguf import open_gguf  # noqa: PLC0415 -- reads the header only

        hf = open_gguf(path).hf_config
        return ModelConfig.from_hf_config(hf, source=path, param_dtype=dtype, compute_dtype=dtype), path
    raise ValueError(
        f"{exp.stage}: Experiment.model = {exp.model!r} is not a preset, an HF directory with config.json or a "
        f".gguf file on this machine; pass --model PRESET (one of {sorted(PRESETS)}) or bind Experiment.model "
        "(MODEL_DIR in gin/models/*.gin) to a directory holding its config.json"
    )


def resolve_index(exp: Experiment, rows: int | None, dim: int | None) -> tuple[int, int, str] | None:
    """(rows, dim, dtype) of the table the exact backend keeps on device; None without one (no
    retrieval, bm25, or scann: its table stays in host memory). Rows and dim given on the
    command line are planned in embed's default float16."""
    if not exp.rollout.retrieval or exp.retrieval_backend not in ("exact", "fusion"):
        return None
    if rows is not None:
        return rows, dim, "float16"
    if exp.index_dir is None:  # the bundled sample corpus, one row per chunk line, MiniLM vectors
        from medr3_jax import assets  # noqa: PLC0415
        from medr3_jax.retrieval.corpus import chunk_files  # noqa: PLC0415

        lines = sum(_line_count(f) for f in chunk_files([assets.sample_corpus_dir()]))
        with open(os.path.join(assets.minilm_dir(), "config.json"), encoding="utf-8") as fh:
            return lines, json.load(fh)["hidden_size"], "float16"
    from medr3_jax.retrieval.store import IndexManifest  # noqa: PLC0415

    index_dir = os.path.expanduser(exp.index_dir)
    if not IndexManifest.exists(index_dir):
        raise ValueError(
            f"{exp.stage}: Experiment.index_dir = {exp.index_dir!r} has no manifest.json here; "
            "pass --index_rows N --index_dim D (the corpus's passages and the encoder's width)"
        )
    manifest = IndexManifest.read(index_dir)
    return manifest.num_rows, int(manifest.dim), manifest.dtype


def _line_count(path: str) -> int:
    with open(path, "rb") as fh:
        data = fh.read()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def mesh_sizes(spec: str, devices: int | None) -> dict[str, int]:
    """parse_mesh_spec for `devices` chips; without it, the spec's own product, or this
    machine's device count when an axis is -1."""
    if devices is None:
        values = [part.partition("=")[2].strip() for part in spec.split(",") if part.strip()]
        fixed = [int(v) for v in values if v.lstrip("-").isdigit()]
        devices = jax.device_count() if -1 in fixed else math.prod(fixed)
    return parse_mesh_spec(spec, devices)


# ---- output -------------------------------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB // 10 else f"{n / 2**20:.1f} MiB"


def format_plan(plan: StagePlan, target: tuple[str, float] | None) -> str:
    """The table of one stage (see module doc), the HBM of known chips, and a verdict for `target`."""
    mesh = ",".join(f"{a}={s}" for a, s in plan.mesh.items())
    out = [
        f"{plan.stage}: {plan.model}, {plan.num_params / 1e9:.2f}B parameters in {plan.dtype}; "
        f"mesh {mesh} = {plan.devices} device(s)",
        f"  {'phase':<9} {'':<56} {'per device':>12} {'unsharded':>12}",
    ]
    for line in plan.lines:
        out.append(f"  {line.phase:<9} {line.label:<56} {_size(line.per_device):>12} {_size(line.unsharded):>12}")
    out += [
        f"  {'':<9} {'peak = resident + max(rollout, update)':<56} {_size(plan.peak):>12}",
        f"  {'':<9} {'total (everything at once)':<56} {_size(plan.total):>12}",
        f"  not counted: activations; for scale, f32 logits of one micro-batch slice {plan.shapes['logits']} "
        f"(UpdateConfig.logits_chunk): "
        f"{_size(plan.logits_per_device)} per device",
    ]
    verdict = lambda gib: "fits" if plan.peak <= gib * GiB else "does not fit"  # noqa: E731
    out.append("  HBM per chip: " + ", ".join(f"{k} {g:g} GiB {verdict(g)}" for k, g in HBM_GIB.items()))
    out += [f"  note: {note}" for note in plan.notes]
    if target is not None:
        name, gib = target
        word = "FITS" if plan.peak <= gib * GiB else "DOES NOT FIT"
        out.append(
            f"  {word} on {name} ({gib:g} GiB per device): peak {_size(plan.peak)} "
            f"= {100 * plan.peak / (gib * GiB):.0f}% (total {_size(plan.total)})"
        )
    return "\n".join(out)


def _target(args: argparse.Namespace) -> tuple[str, float] | None:
    if args.hbm is not None:
        return (args.device_kind or "--hbm", args.hbm)
    if args.device_kind is None:
        return None
    kind = args.device_kind.lower().removeprefix("tpu").strip(" _-")
    if kind not in HBM_GIB:
        raise ValueError(f"--device_kind {args.device_kind!r}: known kinds {sorted(HBM_GIB)} (or pass --hbm GiB)")
    return kind, HBM_GIB[kind]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m medr3_jax.plan", description=__doc__.split("\n")[0])
    p.add_argument("--gin_file", action="append", default=[], help="repeatable, as for medr3_jax.train")
    p.add_argument("--gin_param", action="append", default=[], help="repeatable, as for medr3_jax.train")
    p.add_argument("--mesh", default=None, help="overrides Experiment.mesh, e.g. 'data=2,fsdp=16,tensor=1'")
    p.add_argument("--devices", type=int, default=None, help="chips to plan for (default: the mesh's product)")
    p.add_argument("--model", default=None, help=f"a preset, instead of Experiment.model ({sorted(PRESETS)})")
    p.add_argument("--index_rows", type=int, default=None, help="embedding table rows (default: from index_dir)")
    p.add_argument("--index_dim", type=int, default=None, help="embedding width, with --index_rows")
    p.add_argument("--device_kind", default=None, help=f"say whether it fits one of {sorted(HBM_GIB)}")
    p.add_argument("--hbm", type=float, default=None, help="say whether it fits this many GiB per device")
    p.add_argument("--json", action="store_true", help="print JSON (bytes) instead of the table")
    args = p.parse_args(argv)
    if (args.index_rows is None) != (args.index_dim is None):
        p.error("--index_rows and --index_dim go together")
    return args


def plans(args: argparse.Namespace) -> list[StagePlan]:
    """The plan of every stage the parsed gin config runs."""
    out = []
    for exp in stage_experiments():
        config, name = resolve_model(exp, args.model)
        spec = args.mesh or exp.mesh
        sizes = mesh_sizes(spec, args.devices)
        plan = plan_stage(exp, config, sizes, resolve_index(exp, args.index_rows, args.index_dim), model=name)
        notes = []
        if exp.param_dtype is None:
            notes.append(
                f"Experiment.param_dtype is unset: planned in {PLANNED_DTYPE} (accelerators; CPU runs use float32)"
            )
        if args.devices is None and "-1" in spec:
            notes.append(
                f"mesh {spec!r} solved for this machine's {jax.device_count()} device(s); --devices N plans for N"
            )
        out.append(dataclasses.replace(plan, notes=plan.notes + tuple(notes)))
    return out


def _hide_gin_probe(record: logging.LogRecord) -> bool:
    """gin logs a miss for each `include` it probes as a package resource first (as in train)."""
    return not record.pathname.endswith("gin/resource_reader.py")


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if _hide_gin_probe not in logging.getLogger().filters:
        logging.getLogger().addFilter(_hide_gin_probe)
    gin.clear_config()
    error = parse_gin(args.gin_file, args.gin_param)
    if error:
        print(error, file=sys.stderr)
        return 2
    rules_log = logging.getLogger("medr3_jax.sharding.rules")
    level = rules_log.level
    rules_log.setLevel(logging.ERROR)  # fit_spec's dropped axes become notes of the plan
    try:
        target = _target(args)
        staged = plans(args)
    except ValueError as err:
        print(error_line(err), file=sys.stderr)
        return 2
    finally:
        rules_log.setLevel(level)
    if args.json:
        out = [plan.as_json() for plan in staged]
        if target is not None:
            hbm = int(target[1] * GiB)
            for plan, item in zip(staged, out):
                item["fits"] = {"target": target[0], "hbm_bytes": hbm, "fits": plan.peak <= hbm}
        print(json.dumps({"stages": out}, indent=1))
    else:
        print("\n\n".join(format_plan(plan, target) for plan in staged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
