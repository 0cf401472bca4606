"""Mesh spec parsing and mesh construction on 8 emulated CPU devices."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

from medr3_jax.sharding import MESH_AXES, make_mesh, parse_mesh_spec
from medr3_jax.sharding.mesh import _dcn_shape, _device_grid


def test_parse_full_and_partial_specs() -> None:
    assert parse_mesh_spec("data=2,fsdp=4,tensor=1", 8) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert parse_mesh_spec(" fsdp = 8 ", 8) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert parse_mesh_spec("", 1) == {"data": 1, "fsdp": 1, "tensor": 1}


def test_parse_minus_one_takes_the_rest() -> None:
    assert parse_mesh_spec("data=2,fsdp=-1", 8) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert parse_mesh_spec("tensor=-1,data=2", 8) == {"data": 2, "fsdp": 1, "tensor": 4}
    assert parse_mesh_spec("fsdp=-1")["fsdp"] == jax.device_count()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("data=2,pipe=4", "unknown axis 'pipe'"),
        ("data=two", "not an int"),
        ("data=2,fsdp=2", "multiply to 4"),
        ("data=-1,fsdp=-1", "at most one axis"),
        ("data=3,fsdp=-1", "not divisible"),
        ("data=0,fsdp=-1", "positive or -1"),
        ("data=2,data=4", "given twice"),
        ("data", "not 'axis=size'"),
    ],
)
def test_parse_errors_name_the_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_mesh_spec(spec, 8)
    assert repr(spec) in str(err.value)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 4, 1), (1, 4, 2), (2, 2, 2)])
def test_make_mesh_shapes(shape: tuple[int, int, int]) -> None:
    n = int(np.prod(shape))
    spec = ",".join(f"{a}={s}" for a, s in zip(MESH_AXES, shape))
    mesh = make_mesh(spec, devices=jax.devices()[:n])
    assert mesh.axis_names == MESH_AXES
    assert tuple(mesh.shape[a] for a in MESH_AXES) == shape
    assert mesh.axis_types == (AxisType.Auto,) * 3
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices()[:n])


def test_make_mesh_default_and_mapping() -> None:
    assert dict(make_mesh().shape) == {"data": 1, "fsdp": jax.device_count(), "tensor": 1}
    mesh = make_mesh({"data": 2, "tensor": -1})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "tensor": jax.device_count() // 2}
    with pytest.raises(ValueError, match="unknown axes"):
        make_mesh({"pipe": 8})


@dataclasses.dataclass(frozen=True)
class _FakeDevice:
    """Enough of a device for mesh_utils: two 'hosts' of four CPU devices."""

    id: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"


def _two_hosts() -> list[_FakeDevice]:
    # Interleaved on purpose: the grid must regroup devices by host.
    return [_FakeDevice(id=i, process_index=i % 2) for i in range(8)]


def test_hybrid_layout_puts_hosts_on_data() -> None:
    grid = _device_grid((2, 4, 1), _two_hosts())
    hosts = np.vectorize(lambda d: d.process_index)(grid)
    assert (hosts[0] == 0).all() and (hosts[1] == 1).all()


def test_hybrid_layout_spills_hosts_onto_fsdp() -> None:
    grid = _device_grid((1, 8, 1), _two_hosts())
    hosts = np.vectorize(lambda d: d.process_index)(grid)
    assert (hosts[0, :4] == 0).all() and (hosts[0, 4:] == 1).all()


def test_dcn_shape() -> None:
    assert _dcn_shape((4, 8, 2), 2) == (2, 1, 1)
    assert _dcn_shape((2, 8, 2), 4) == (2, 2, 1)
    assert _dcn_shape((1, 1, 4), 2) == (1, 1, 2)
    with pytest.raises(ValueError, match="do not factor"):
        _dcn_shape((3, 1, 1), 2)
