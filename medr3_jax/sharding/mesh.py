"""The device mesh: three named axes ('data', 'fsdp', 'tensor'), built from a short spec.

    mesh = make_mesh("data=2,fsdp=4,tensor=1")   # 8 devices
    mesh = make_mesh("fsdp=-1")                   # every device on fsdp (the default)

'data' replicates parameters and splits the batch; 'fsdp' splits the batch *and* shards
parameters / optimizer state; 'tensor' splits heads and the FFN dimension (Megatron style).
Axis types are `Auto` (classic GSPMD propagation), whatever `jax.make_mesh` defaults to.

Multi-host: the slow network (DCN between TPU slices, or between processes on GPU / CPU
hosts) carries the least traffic when it is crossed by the outermost axes. So when the
devices come from several slices (or, failing `slice_index`, several processes) the mesh
is built with `create_hybrid_device_mesh`: the host/slice count is laid onto 'data' first,
then onto 'fsdp' for what 'data' cannot absorb, and 'tensor' (the chattiest axis) only as a
last resort, with a warning. Within one granule the order comes from `create_device_mesh`
(torus-aware on TPU). Anything these helpers refuse falls back to a plain reshape of the
devices sorted by (process, id), which still keeps each process's devices together on the
outer axes.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

logger = logging.getLogger(__name__)

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")
DEFAULT_MESH_SPEC = "data=1,fsdp=-1,tensor=1"


def parse_mesh_spec(spec: str, num_devices: int | None = None) -> dict[str, int]:
    """Parses 'data=2,fsdp=4,tensor=1' into {'data': 2, 'fsdp': 4, 'tensor': 1}.

    Missing axes are 1; exactly one axis may be -1 and takes the remaining devices. The
    product must equal `num_devices` (default `jax.device_count()`). Errors name the spec.
    """
    raw: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep:
            raise ValueError(f"mesh spec {spec!r}: entry {part!r} is not 'axis=size'")
        if name not in MESH_AXES:
            raise ValueError(f"mesh spec {spec!r}: unknown axis {name!r}; axes are {MESH_AXES}")
        if name in raw:
            raise ValueError(f"mesh spec {spec!r}: axis {name!r} given twice")
        try:
            raw[name] = int(value)
        except ValueError:
            raise ValueError(f"mesh spec {spec!r}: size {value!r} of axis {name!r} is not an int") from None
    return _resolve(raw, num_devices, spec)


def _resolve(raw: Mapping[str, int], num_devices: int | None, spec: Any) -> dict[str, int]:
    """Fills missing axes with 1, solves the single -1, checks the device count."""
    unknown = set(raw) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh spec {spec!r}: unknown axes {sorted(unknown)}; axes are {MESH_AXES}")
    sizes = {axis: int(raw.get(axis, 1)) for axis in MESH_AXES}
    bad = [a for a, s in sizes.items() if s == 0 or s < -1]
    if bad:
        raise ValueError(f"mesh spec {spec!r}: sizes must be positive or -1, got {[(a, sizes[a]) for a in bad]}")
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"mesh spec {spec!r}: at most one axis may be -1, got {free}")
    n = jax.device_count() if num_devices is None else num_devices
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if n % fixed:
            raise ValueError(f"mesh spec {spec!r}: {n} devices are not divisible by the fixed axes' product {fixed}")
        sizes[free[0]] = n // fixed
    elif fixed != n:
        raise ValueError(f"mesh spec {spec!r}: axis sizes multiply to {fixed}, but there are {n} devices")
    return sizes


def make_mesh(spec: str | Mapping[str, int] = DEFAULT_MESH_SPEC, devices: Sequence[Any] | None = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh with Auto axis types over `devices` (default: all)."""
    devs = list(jax.devices() if devices is None else devices)
    if isinstance(spec, str):
        sizes = parse_mesh_spec(spec, len(devs))
    else:
        sizes = _resolve(spec, len(devs), dict(spec))
    shape = tuple(sizes[a] for a in MESH_AXES)
    grid = _device_grid(shape, devs)
    mesh = Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
    logger.info("mesh %s over %d devices (%s)", dict(mesh.shape), grid.size, devs[0].platform)
    return mesh


def _device_grid(shape: tuple[int, ...], devices: list[Any]) -> np.ndarray:
    """Orders `devices` into an array of `shape`: hybrid across hosts, topology-aware within."""
    attr, granules = _granules(devices)
    try:
        if granules > 1:
            dcn = _dcn_shape(shape, granules)
            ici = tuple(s // d for s, d in zip(shape, dcn))
            return mesh_utils.create_hybrid_device_mesh(
                ici, dcn, devices, process_is_granule=attr == "process_index", allow_split_physical_axes=True
            )
        try:
            return mesh_utils.create_device_mesh(shape, devices)
        except (ValueError, NotImplementedError, AssertionError):
            return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError) as err:
        logger.warning("mesh %s: topology-aware layout failed (%s); plain reshape by (process, id)", shape, err)
    ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
    return np.asarray(ordered, dtype=object).reshape(shape)


def _granules(devices: list[Any]) -> tuple[str, int]:
    """Which device attribute separates the slow network, and how many groups it makes.

    Devices that know their slice (TPU) are grouped by slice: ICI joins every host of one
    slice, so a single-slice pod needs no hybrid layout. Devices without `slice_index`
    (CPU, most GPU setups) are grouped by process.
    """
    attr = "slice_index" if all(hasattr(d, "slice_index") for d in devices) else "process_index"
    return attr, len({getattr(d, attr) for d in devices})


def _dcn_shape(shape: tuple[int, ...], granules: int) -> tuple[int, ...]:
    """Spreads the granule count over the axes, outermost ('data') first."""
    dcn, left = [], granules
    for size in shape:
        g = math.gcd(left, size)
        dcn.append(g)
        left //= g
    if left != 1:
        raise ValueError(f"{granules} hosts/slices do not factor into mesh shape {shape}")
    if dcn[-1] > 1:
        logger.warning("mesh %s: the 'tensor' axis crosses hosts (dcn %s); expect slow collectives", shape, dcn)
    return tuple(dcn)
