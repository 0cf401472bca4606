"""Checkpoints: retention, exact round trip (params, AdamW state, rng, meta), async saves,
restore onto other meshes, `every_steps` gating, missing and broken directories."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec, SingleDeviceSharding

from medr3_jax.models.config import preset
from medr3_jax.models.hf import CheckpointError
from medr3_jax.models.transformer import Decoder
from medr3_jax.sharding import make_mesh, param_shardings
from medr3_jax.trainer.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    abstract_train_state,
    checkpoint_meta,
    config_from_dict,
    config_to_dict,
    final_checkpoint,
    load_params_from_checkpoint,
)

CONFIG = preset("tiny")
TX = optax.adamw(1e-2, weight_decay=0.01)


def _train_state(model: Decoder) -> dict:
    """Params and AdamW state after one update (non-trivial mu, nu, count)."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    opt_state = TX.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
    updates, opt_state = TX.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return {"params": params, "opt_state": opt_state}


def _meta(step: int) -> dict:
    return checkpoint_meta(
        step=step,
        stage="reasoning",
        data_position=10 * step,
        model_config=CONFIG,
        tokenizer="/tok",
        operative_config="train.steps = 3\n",
    )


def _assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def model() -> Decoder:
    return Decoder(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def state(model) -> dict:
    return _train_state(model)


def test_config_dict_round_trip() -> None:
    for cfg in (CONFIG, preset("qwen2_5_7b"), preset("llama3_1_8b_instruct")):
        data = json.loads(json.dumps(config_to_dict(cfg)))
        assert config_from_dict(data) == cfg
    assert config_to_dict(CONFIG)["rope_scaling"]["rope_type"] == "llama3"
    with pytest.raises(ValueError, match="unknown fields"):
        config_from_dict({**config_to_dict(CONFIG), "bogus": 1})


def test_keep_and_exact_round_trip(state, tmp_path) -> None:
    ckpt = Checkpointer(tmp_path, CheckpointConfig(every_steps=2, keep=2, async_save=False))
    for step in (2, 4, 6):
        assert ckpt.save(step, state, _meta(step))
    assert ckpt.all_steps() == [4, 6] and ckpt.latest_step() == 6
    assert sorted(os.listdir(tmp_path)) == ["4", "6"]
    restored, meta = ckpt.restore(abstract_state=abstract_train_state(CONFIG, TX))
    _assert_trees_equal(restored, state)
    assert meta == _meta(6)
    assert config_from_dict(meta["model_config"]) == CONFIG
    assert ckpt.restore_meta(4)["data_position"] == 40
    ckpt.close()


def test_a_checkpoint_with_the_older_rng_item_restores_its_params_and_optimizer(state, tmp_path) -> None:
    older = state | {"rng": jax.random.key_data(jax.random.key(3))}  # what checkpoints held before 2026-12
    with Checkpointer(tmp_path, CheckpointConfig(every_steps=1, async_save=False)) as ckpt:
        ckpt.save(1, older, _meta(1))
    with Checkpointer(tmp_path, CheckpointConfig(every_steps=1, async_save=False)) as ckpt:
        restored, _ = ckpt.restore(abstract_state=abstract_train_state(CONFIG, TX))
        _assert_trees_equal(restored, state)  # the rng item is left unread
        assert ckpt.save(2, restored, _meta(2))  # and the same checkpointer saves after restoring
        assert ckpt.all_steps() == [1, 2]


def test_a_kept_step_outlives_the_newest_keep(state, tmp_path) -> None:
    ckpt = Checkpointer(tmp_path, CheckpointConfig(every_steps=1, keep=2, async_save=False))
    for step in (1, 2, 3):
        ckpt.save(step, state, _meta(step))
        if step == 2:
            ckpt.keep_also([2])  # e.g. the best step by evaluation
    for step in (4, 5):
        ckpt.save(step, state, _meta(step))
    assert ckpt.all_steps() == [2, 4, 5]
    ckpt.keep_also([4])  # a new best: step 2 is no longer kept and goes at the next save
    ckpt.save(6, state, _meta(6))
    assert ckpt.all_steps() == [4, 5, 6] and sorted(os.listdir(tmp_path)) == ["4", "5", "6"]
    ckpt.close()


def test_async_save_then_restore(state, tmp_path) -> None:
    with Checkpointer(tmp_path, CheckpointConfig(every_steps=1, keep=3, async_save=True)) as ckpt:
        assert ckpt.save(1, state, _meta(1))
        ckpt.wait()
        assert ckpt.latest_step() == 1
        restored, meta = ckpt.restore(1, abstract_state=abstract_train_state(CONFIG, TX))
    _assert_trees_equal(restored, state)
    assert meta["step"] == 1
    # A fresh Checkpointer (a resumed run) sees the same step.
    assert Checkpointer(tmp_path, read_only=True).latest_step() == 1


def test_every_steps_gating(state, tmp_path) -> None:
    ckpt = Checkpointer(tmp_path, CheckpointConfig(every_steps=3, async_save=False))
    assert not ckpt.save(1, state, _meta(1))
    assert ckpt.save(3, state, _meta(3))
    assert ckpt.save(4, state, _meta(4), force=True)
    assert not ckpt.save(3, state, _meta(3), force=True)  # already there
    assert ckpt.all_steps() == [3, 4]
    assert ckpt.restore_meta()["step"] == 4
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 5; steps: \[3, 4\]"):
        ckpt.restore_meta(5)
    ckpt.close()
    with pytest.raises(ValueError, match="every_steps"):
        CheckpointConfig(every_steps=0)


def test_restore_onto_other_meshes(model, tmp_path) -> None:
    save_mesh = make_mesh("data=1,fsdp=8,tensor=1")
    abstract = abstract_train_state(CONFIG, TX, save_mesh)
    state = jax.device_put(_train_state(model), jax.tree.map(lambda a: a.sharding, abstract))
    assert state["params"]["layers"]["q_proj"].sharding == param_shardings(CONFIG, save_mesh)["layers/q_proj"]
    assert len(state["params"]["layers"]["q_proj"].addressable_shards) == 8
    with Checkpointer(tmp_path, CheckpointConfig(every_steps=1, async_save=False)) as ckpt:
        ckpt.save(5, state, _meta(5))

        new_mesh = make_mesh("data=2,fsdp=2,tensor=2")
        target = abstract_train_state(CONFIG, TX, new_mesh)
        restored, _ = ckpt.restore(abstract_state=target)
        _assert_trees_equal(restored, state)
        for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
            assert got.sharding == want.sharding
        q = restored["params"]["layers"]["q_proj"]
        assert q.sharding == param_shardings(CONFIG, new_mesh)["layers/q_proj"]
        assert q.sharding.spec == PartitionSpec(None, "fsdp", "tensor", None)
        mu_q = restored["opt_state"][0].mu["layers"]["q_proj"]
        assert mu_q.sharding.spec == q.sharding.spec

        single = abstract_train_state(CONFIG, TX)  # mesh=None: device 0
        restored, _ = ckpt.restore(abstract_state=single)
        _assert_trees_equal(restored, state)
        assert all(isinstance(x.sharding, SingleDeviceSharding) for x in jax.tree.leaves(restored))

        with pytest.raises(ValueError, match="no sharding"):
            ckpt.restore(abstract_state=jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), single))


def test_load_params_and_final_checkpoint(model, state, tmp_path) -> None:
    workdir = tmp_path / "stage1"
    with Checkpointer(workdir / "checkpoints", CheckpointConfig(every_steps=1, async_save=False)) as ckpt:
        ckpt.save(7, state, _meta(7))
        ckpt.save(9, state, _meta(9))
    final = final_checkpoint(workdir)
    assert final == str(workdir / "checkpoints" / "9")
    assert final_checkpoint(workdir / "checkpoints") == final
    mesh = make_mesh("data=1,fsdp=4,tensor=2")
    loaded, meta = load_params_from_checkpoint(final, shardings_fn=lambda c: param_shardings(c, mesh))
    assert meta["step"] == 9 and loaded.config == CONFIG
    assert loaded.layers.q_proj[...].sharding == param_shardings(CONFIG, mesh)["layers/q_proj"]
    _assert_trees_equal(nnx.to_pure_dict(nnx.state(loaded, nnx.Param)), state["params"])
    older, meta = load_params_from_checkpoint(workdir, step=7)
    assert meta["step"] == 7
    tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
    mask = jnp.ones((2, 6), bool)
    # Same params; the sharded forward only reorders f32 sums.
    np.testing.assert_allclose(loaded(tokens, positions, mask)[0], older(tokens, positions, mask)[0], atol=1e-5)


def test_missing_and_empty_directories(tmp_path) -> None:
    missing = tmp_path / "nope"
    assert Checkpointer(missing, read_only=True).latest_step() is None
    assert not missing.exists()
    assert final_checkpoint(missing) is None
    with pytest.raises(CheckpointError, match=str(missing)):
        load_params_from_checkpoint(missing)
    empty = Checkpointer(tmp_path / "empty")
    assert empty.latest_step() is None
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        empty.restore(abstract_state=abstract_train_state(CONFIG, TX))
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        empty.restore_meta(3)
    empty.close()


def test_broken_checkpoint_is_named(state, tmp_path) -> None:
    with Checkpointer(tmp_path, CheckpointConfig(every_steps=1, async_save=False)) as ckpt:
        ckpt.save(2, state, _meta(2))
    shutil.rmtree(tmp_path / "2" / "meta")
    ckpt = Checkpointer(tmp_path)
    step_dir = str(tmp_path / "2")
    with pytest.raises(CheckpointError, match=f"{step_dir}.*meta"):
        ckpt.restore(abstract_state=abstract_train_state(CONFIG, TX))
    with pytest.raises(CheckpointError, match=step_dir):
        ckpt.restore_meta()
    with pytest.raises(CheckpointError, match=step_dir):
        load_params_from_checkpoint(tmp_path)
    # A state item whose array data is gone.
    with Checkpointer(tmp_path / "b", CheckpointConfig(every_steps=1, async_save=False)) as ckpt2:
        ckpt2.save(1, state, _meta(1))
    for root, _, files in os.walk(tmp_path / "b" / "1" / "state"):
        for name in files:
            os.remove(os.path.join(root, name))
    with pytest.raises(CheckpointError, match=str(tmp_path / "b" / "1")):
        Checkpointer(tmp_path / "b").restore(abstract_state=abstract_train_state(CONFIG, TX))
    ckpt.close()
