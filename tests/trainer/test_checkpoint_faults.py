"""Checkpoint faults (issue 24 items 3 and 4): a newest step that cannot be restored (a truncated
file, a missing item) is set aside, kept, and the step before it restored; a save that fails
(a full disk) is logged and tried again at the next step, and too many failures in a row stop
the run with an error naming the directory and the step to resume from; a metrics line that
cannot be written is logged and training goes on."""

from __future__ import annotations

import errno
import glob
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from medr3_jax.models.hf import CheckpointError
from medr3_jax.trainer.checkpoints import CheckpointConfig, Checkpointer
from medr3_jax.trainer.metrics import MetricWriter


def _state(step: int) -> dict:
    rng = np.random.default_rng(step)
    return {"params": {"w": rng.standard_normal((64, 32)).astype(np.float32), "b": np.full((32,), step, np.float32)}}


def _abstract() -> dict:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), _state(0))


def _saved(directory, steps=(1, 2, 3), **config) -> Checkpointer:
    ckpt = Checkpointer(str(directory), CheckpointConfig(every_steps=1, keep=5, async_save=False, **config))
    for step in steps:
        assert ckpt.save(step, _state(step), {"step": step, "data_position": 10 * step})
    return ckpt


def _truncate_largest_file(step_dir: str) -> None:
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True) if os.path.isfile(f)]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as fh:
        fh.truncate(os.path.getsize(largest) // 2)


@pytest.mark.parametrize("damage", ["truncated_file", "missing_item"])
def test_a_broken_newest_step_is_set_aside_and_the_previous_restored(tmp_path, damage, caplog):
    directory = tmp_path / "checkpoints"
    ckpt = _saved(directory)
    if damage == "truncated_file":
        _truncate_largest_file(ckpt.step_dir(3))
    else:
        shutil.rmtree(os.path.join(ckpt.step_dir(3), "meta"))
    ckpt.close()
    ckpt = Checkpointer(str(directory), CheckpointConfig(every_steps=1, keep=5, async_save=False))
    with caplog.at_level(logging.WARNING):
        state, meta = ckpt.restore_latest_good(abstract_state=_abstract())
    assert meta["step"] == 2 and meta["data_position"] == 20
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), _state(2)["params"]["w"])
    assert ckpt.all_steps() == [1, 2]
    [aside] = glob.glob(str(directory) + ".unrestorable/3-*")
    assert os.listdir(aside)  # kept, never deleted
    assert "checkpoint step 3 cannot be restored" in caplog.text and aside in caplog.text
    assert ckpt.save(3, _state(3), {"step": 3, "data_position": 30})  # training goes on past it
    ckpt.close()


def test_no_step_that_restores_is_an_error_naming_where_they_are_kept(tmp_path):
    ckpt = _saved(tmp_path / "c", steps=(1, 2))
    for step in (1, 2):
        shutil.rmtree(os.path.join(ckpt.step_dir(step), "state"))
    with pytest.raises(CheckpointError, match=r"no checkpoint could be restored; the broken ones are kept in .*"):
        ckpt.restore_latest_good(abstract_state=_abstract())
    assert len(glob.glob(str(tmp_path / "c") + ".unrestorable/*")) == 2
    assert Checkpointer(str(tmp_path / "e")).restore_latest_good(abstract_state=_abstract()) is None  # none at all


def _full_disk(manager, failures: int):
    real, calls = manager.save, {"n": 0}

    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    manager.save = save
    return calls


def test_a_failed_save_is_logged_and_tried_again_at_the_next_step(tmp_path, caplog):
    ckpt = Checkpointer(str(tmp_path / "c"), CheckpointConfig(every_steps=4, async_save=False, max_failed_saves=3))
    _full_disk(ckpt._manager, failures=1)
    with caplog.at_level(logging.WARNING):
        assert not ckpt.save(4, _state(4), {"step": 4})
    assert ckpt.failed_saves == 1 and "checkpoint step 4 not saved (OSError" in caplog.text
    assert ckpt.save(5, _state(5), {"step": 5})  # not a multiple of 4: the retry
    assert ckpt.latest_step() == 5 and ckpt.failed_saves == 0
    assert not ckpt.save(6, _state(6), {"step": 6})  # back to every 4 steps
    ckpt.close()


def test_too_many_failed_saves_in_a_row_stop_the_run(tmp_path):
    ckpt = _saved(tmp_path / "c", steps=(1,), max_failed_saves=2)
    _full_disk(ckpt._manager, failures=99)
    assert not ckpt.save(2, _state(2), {"step": 2})
    with pytest.raises(
        CheckpointError, match=r"2 checkpoint saves in a row failed .*No space left.*resume from step 1"
    ):
        ckpt.save(3, _state(3), {"step": 3})


def test_a_failed_background_save_counts_and_wait_refuses_to_end_on_it(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "c"), CheckpointConfig(every_steps=1, async_save=True, max_failed_saves=3))
    assert ckpt.save(1, _state(1), {"step": 1})
    ckpt._manager.wait_until_finished()

    def fail():
        raise OSError(errno.EIO, "Input/output error")

    ckpt._manager.check_for_errors = fail  # as Orbax reports a background save that failed
    assert ckpt.save(2, _state(2), {"step": 2})  # step 1's failure is counted when the next save starts
    assert ckpt.failed_saves == 1
    with pytest.raises(CheckpointError, match="the last checkpoint save failed"):
        ckpt.wait()  # step 2's (the same fault) too: a run may not end on it
    assert ckpt.failed_saves == 2


def test_a_metrics_line_that_cannot_be_written_is_logged_and_training_goes_on(tmp_path, caplog):
    writer = MetricWriter(tmp_path / "tb")

    class FullDisk:
        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass

    writer._jsonl = FullDisk()
    with caplog.at_level(logging.WARNING):
        writer.scalars(0, {"loss": 1.0})
        writer.scalars(1, {"loss": 0.5})
    assert writer.write_failures == 2 and "metrics of step 1 not written" in caplog.text
    writer.close()
