"""One of two 'hosts' for test_distributed: 2 CPU devices each, 4 global, one mesh.

Usage: python distributed_worker.py PORT PROCESS_ID OUT_PREFIX (logits go to OUT_PREFIX.<id>.npy). Prints 'RESULT <json>' on success.
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":  # as a worker process; the test imports `model_inputs` only
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

from medr3_jax.sharding import (  # noqa: E402
    batch_spec,
    host_local_to_global,
    initialize,
    is_primary,
    make_mesh,
    param_shardings,
    shard_array_tree,
)

MODEL_BATCH, MODEL_LEN = 4, 8


def model_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tiny-model batch both the workers and the single-process reference use."""
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 256, (MODEL_BATCH, MODEL_LEN)).astype(np.int32)
    mask = np.ones_like(tokens, bool)
    mask[1, :3] = False  # a left-padded row
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0).astype(np.int32)
    return tokens, mask, positions


def sharded_decoder_logits(mesh, process_id: int) -> np.ndarray:
    """Tiny Decoder with params placed by the rules over both hosts; each host feeds its rows."""
    from flax import nnx  # noqa: PLC0415

    from medr3_jax.models import Decoder, preset  # noqa: PLC0415
    from medr3_jax.models.hf import assemble_decoder, flat_params  # noqa: PLC0415

    config = preset("tiny")
    local = Decoder(config, rngs=nnx.Rngs(0))  # same seed, same values on every host
    shardings = param_shardings(config, mesh)
    placed = {
        path: jax.make_array_from_callback(value.shape, shardings[path], lambda idx, v=np.asarray(value): v[idx])
        for path, value in flat_params(local).items()
    }
    model = assemble_decoder(config, placed)
    rows = slice(2 * process_id, 2 * process_id + 2)
    tokens, mask, positions = (host_local_to_global(a[rows], mesh, batch_spec(2)) for a in model_inputs())
    forward = nnx.jit(lambda m, t, p, k: m(t, p, k)[0])
    logits = forward(model, tokens, positions, mask)
    return np.asarray(jax.jit(lambda x: x, out_shardings=NamedSharding(mesh, P()))(logits))


def main(port: int, process_id: int) -> None:
    initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)  # idempotent
    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    mesh = make_mesh("data=2,fsdp=2,tensor=1")
    hosts = np.vectorize(lambda d: d.process_index)(mesh.devices)
    assert (hosts[0] == 0).all() and (hosts[1] == 1).all(), hosts  # data spans the hosts

    x = np.arange(8 * 16, dtype=np.float32).reshape(8, 16) / 100.0
    w = np.linspace(-1.0, 1.0, 16 * 4, dtype=np.float32).reshape(16, 4)
    # Each host feeds only its own rows: data index p holds rows [4p, 4p+4).
    xs = host_local_to_global(x[4 * process_id : 4 * process_id + 4], mesh, P("data", "fsdp"))
    ws = shard_array_tree(w, NamedSharding(mesh, P("fsdp", None)))  # contraction dim sharded

    @jax.jit
    def step(x, w):
        return jnp.sum(x @ w, axis=0)  # psum over fsdp (matmul) and over data (row sum)

    out = jax.jit(step, out_shardings=NamedSharding(mesh, P()))(xs, ws)
    logits = sharded_decoder_logits(make_mesh("data=2,fsdp=1,tensor=2"), process_id)
    np.save(sys.argv[3] + f".{process_id}.npy", logits)
    result = {"process": process_id, "primary": is_primary(), "sum": np.asarray(out).tolist()}
    print("RESULT " + json.dumps(result), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
