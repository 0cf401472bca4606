"""Multi-host start-up: single-process no-op, cluster detection, and two real processes on
127.0.0.1 (2 CPU devices each, gloo collectives) computing one sharded matmul."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import portpicker
import pytest
from jax.sharding import PartitionSpec as P

from medr3_jax.sharding import batch_spec, distributed, host_local_to_global, initialize, is_primary, make_mesh

_ROOT = Path(__file__).resolve().parents[2]
_WORKER = Path(__file__).with_name("distributed_worker.py")
_CLUSTER_VARS = (
    "JAX_COORDINATOR_ADDRESS",
    "TPU_WORKER_HOSTNAMES",
    "TPU_PROCESS_ADDRESSES",
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "OMPI_MCA_orte_hnp_uri",
)


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in _CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(distributed, "_has_tpu_chips", lambda: False)
    return monkeypatch


def test_single_process_initialize_is_a_no_op(no_cluster: pytest.MonkeyPatch) -> None:
    initialize()
    initialize()
    assert not distributed._jax_initialized()
    assert jax.process_count() == 1 and is_primary()


def test_cluster_detection(no_cluster: pytest.MonkeyPatch) -> None:
    assert distributed._detected_cluster() is None
    slurm = {
        "SLURM_JOB_ID": "1",
        "SLURM_STEP_NODELIST": "n[1-2]",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
    }
    for key, value in slurm.items():
        no_cluster.setenv(key, value)
    assert distributed._detected_cluster() is None  # one task: nothing to join
    no_cluster.setenv("SLURM_NTASKS", "2")
    assert distributed._detected_cluster() == "slurm"
    no_cluster.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    assert distributed._detected_cluster() == "env"


def test_host_local_to_global_single_process() -> None:
    mesh = make_mesh("data=2,fsdp=4,tensor=1")
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    specs = {"x": batch_spec(2), "y": P(("data", "fsdp"))}
    tree = host_local_to_global({"x": x, "y": x[:, 0]}, mesh, specs)
    np.testing.assert_array_equal(np.asarray(tree["x"]), x)
    assert tree["x"].addressable_shards[0].data.shape == (2, 3)
    one = host_local_to_global(x, mesh, batch_spec(2))
    np.testing.assert_array_equal(np.asarray(one), x)


def test_two_processes_share_one_mesh(tmp_path) -> None:
    """Both hosts build one mesh; a sharded matmul and a sharded tiny-Decoder forward equal the
    single-process results."""
    port = portpicker.pick_unused_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])))
    procs = [
        subprocess.Popen(
            [sys.executable, str(_WORKER), str(port), str(pid), str(tmp_path / "logits")],
            cwd=_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    x = np.arange(8 * 16, dtype=np.float32).reshape(8, 16) / 100.0
    w = np.linspace(-1.0, 1.0, 16 * 4, dtype=np.float32).reshape(16, 4)
    want = (x @ w).sum(axis=0)
    for pid, (code, out, err) in enumerate(outputs):
        assert code == 0, f"process {pid} exited {code}\nstdout:\n{out}\nstderr:\n{err}"
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
        assert line is not None, f"process {pid} printed no result\nstderr:\n{err}"
        result = json.loads(line[len("RESULT ") :])
        assert result["primary"] == (pid == 0)
        np.testing.assert_allclose(result["sum"], want, rtol=1e-5, err_msg=err)
    from flax import nnx  # noqa: PLC0415

    from medr3_jax.models import Decoder, preset  # noqa: PLC0415
    from tests.sharding.distributed_worker import model_inputs  # noqa: PLC0415

    tokens, mask, positions = model_inputs()
    single, _ = Decoder(preset("tiny"), rngs=nnx.Rngs(0))(tokens, positions, mask)
    for pid in range(2):
        logits = np.load(tmp_path / f"logits.{pid}.npy")
        assert np.abs(logits - np.asarray(single))[mask].max() <= 1e-5
