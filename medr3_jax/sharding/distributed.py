"""Multi-host start-up: join JAX's multi-controller runtime, once, before any device use.

    initialize()                                       # TPU pod / SLURM / Open MPI: auto
    initialize("10.0.0.1:1234", num_processes=2, process_id=rank)   # anything else
    batch = host_local_to_global(local_batch, mesh, batch_spec(2))

Every host runs the same program; `jax.distributed.initialize` must run before the first
call that touches devices (`jax.devices()`, any array op), so this module never does.
On a single process with nothing detected, `initialize()` does nothing.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

logger = logging.getLogger(__name__)

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as Google PCI devices (as JAX checks).
_initialized = False


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
) -> None:
    """Joins the distributed runtime; idempotent.

    With explicit arguments they are passed on (CPU processes get gloo collectives). With
    none, `jax.distributed.initialize()` runs only where JAX can find its peers itself (TPU
    VM, SLURM, Open MPI, JAX_COORDINATOR_ADDRESS); elsewhere a single process is assumed.
    """
    global _initialized
    if _initialized or _jax_initialized():
        logger.debug("distributed runtime already initialized")
        return
    explicit = coordinator_address is not None or process_id is not None or (num_processes or 1) > 1
    cluster = None if explicit else _detected_cluster()
    if not explicit and cluster is None:
        logger.info("single process (no coordinator given, no cluster detected): no distributed init")
        return
    if cluster != "tpu":
        _enable_cpu_collectives()
    if explicit:
        logger.info("joining %s as process %s of %s", coordinator_address, process_id, num_processes)
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
        )
    else:
        logger.info("joining the %s cluster (auto-detected)", cluster)
        jax.distributed.initialize(local_device_ids=local_device_ids)
    _initialized = True
    _log_topology()


def add_process_flags(parser: argparse.ArgumentParser) -> None:
    """The CLIs' multi-process flags (--coordinator_address, --num_processes, --process_id), passed
    on by `initialize_from`."""
    group = parser.add_argument_group(
        "multi-process", "only where JAX cannot find its peers itself (TPU pods, SLURM and Open MPI need none)"
    )
    group.add_argument("--coordinator_address", default=None, help="host:port of process 0, e.g. 10.0.0.1:1234")
    group.add_argument("--num_processes", type=int, default=None)
    group.add_argument("--process_id", type=int, default=None)


def initialize_from(args: argparse.Namespace) -> None:
    """`initialize` with the flags of `add_process_flags`; after it only process 0 logs INFO lines
    (one log for the whole job: the other processes report only problems)."""
    initialize(args.coordinator_address, args.num_processes, args.process_id)
    if not is_primary():
        logging.getLogger().setLevel(logging.WARNING)


def _jax_initialized() -> bool:
    is_init = getattr(jax.distributed, "is_initialized", None)
    return bool(is_init()) if is_init is not None else False


def _detected_cluster() -> str | None:
    """Names the environment whose peers `jax.distributed.initialize()` can find, if any."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "env"
    if env.get("TPU_WORKER_HOSTNAMES") or env.get("TPU_PROCESS_ADDRESSES") or _has_tpu_chips():
        return "tpu"
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(v in env for v in slurm) and _int(env["SLURM_NTASKS"]) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and _int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "openmpi"
    return None


def _has_tpu_chips() -> bool:
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor, encoding="ascii") as fh:
                if fh.read().strip() == _GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _enable_cpu_collectives() -> None:
    """CPU processes need a collectives backend for cross-process all-reduce; use gloo.

    Harmless for GPU/TPU runs (it configures only the CPU client). Kept if already set
    (e.g. 'mpi'); newer JAX defaults to gloo anyway.
    """
    try:
        current = jax.config.jax_cpu_collectives_implementation
    except AttributeError:
        return
    if current in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _log_topology() -> None:
    local = jax.local_devices()
    logger.info(
        "process %d/%d: %d local of %d global devices (%s): %s",
        jax.process_index(),
        jax.process_count(),
        len(local),
        jax.device_count(),
        local[0].platform if local else "?",
        [d.id for d in local],
    )


def is_primary() -> bool:
    """True on the process that writes logs, metrics and checkpoints metadata (index 0)."""
    return jax.process_index() == 0


def to_host(array: Any) -> np.ndarray:
    """A device array's full value on this host, whatever its sharding.

    Fully addressable or fully replicated arrays are read directly; an array split across
    processes is all-gathered first (a collective: every process must call this in the same
    order). Host logic that runs on every process (the rollout's stop handling, retrieval,
    rewards) reads device results through this.
    """
    if not isinstance(array, jax.Array) or array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def gather_from_processes(x: np.ndarray) -> np.ndarray:
    """Every process's `x` (same shape and dtype on all), stacked: [processes, ...]. A collective."""
    return np.asarray(multihost_utils.process_allgather(x))


def all_processes(flag: bool) -> bool:
    """True only if `flag` is True on every process (a collective; one process: `flag`)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.all(gather_from_processes(np.int32(flag))))


def sync(name: str) -> None:
    """Waits until every process reaches the barrier `name` (no-op on a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def host_local_to_global(array_tree: Any, mesh: Mesh, specs: Any) -> Any:
    """Assembles global arrays from each process's local part (e.g. its rows of a batch).

    `specs` is one PartitionSpec for every array, or a pytree of them matching `array_tree`.
    Each process passes the slice its addressable devices hold; the global shape follows.
    """

    def one(local: Any, spec: P) -> jax.Array:
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local)

    if isinstance(specs, P):
        return jax.tree.map(lambda x: one(x, specs), array_tree)
    return jax.tree.map(one, array_tree, specs)
