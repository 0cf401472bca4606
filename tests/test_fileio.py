"""The workdir's file layer (`medr3_jax.fileio`) on a local folder and on a fake object store
(`fakegcs://`, tests/fake_gcs.py), and the trainer's writers on the fake store: metrics.jsonl and
TensorBoard event files (through a local mirror), audit files, the best-evaluation record and
the run summary; a gs:// URL without gcsfs names the flag and the install command."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from medr3_jax import fileio
from medr3_jax.trainer.metrics import JSONL_NAME, MetricWriter, read_scalars, read_texts
from tests.fake_gcs import FakeGCS, registered


@pytest.fixture
def fake_gcs():
    with registered() as fs:
        yield fs


@pytest.fixture(params=["local", "fakegcs"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    request.getfixturevalue("fake_gcs")
    return "fakegcs://bucket/run"


def test_the_layer_on_a_local_folder_and_on_an_object_store(root):
    remote = root.startswith("fakegcs://")
    assert fileio.is_remote(root) == remote
    assert fileio.absolute(root) == (root if remote else os.path.abspath(root))
    assert fileio.join(root, "stage3", "tb") == f"{root}/stage3/tb"
    assert not fileio.exists(root) and not fileio.isdir(root)
    fileio.makedirs(fileio.join(root, "stage3"))
    fileio.makedirs(fileio.join(root, "stage3"))  # exist_ok
    assert fileio.isdir(fileio.join(root, "stage3"))

    path = fileio.join(root, "stage3", "a.txt")
    fileio.write_text(path, "één\n")
    fileio.append_text(path, "two\n")  # remote: read and written again whole
    assert fileio.read_text(path) == "één\ntwo\n" and fileio.isfile(path) and not fileio.isdir(path)
    with fileio.open(path, "rb") as fh:
        assert fh.read() == "één\ntwo\n".encode()
    with fileio.open(fileio.join(root, "stage3", "b.bin"), "wb") as fh:
        fh.write(b"\x00\x01")

    nested = fileio.join(root, "stage3", "rollouts", "step_000000.jsonl")  # its folder does not exist yet
    fileio.atomic_write_text(nested, '{"step": 0}\n')
    assert json.loads(fileio.read_text(nested)) == {"step": 0}
    assert fileio.listdir(fileio.join(root, "stage3", "rollouts")) == ["step_000000.jsonl"]  # no .tmp left
    assert fileio.listdir(fileio.join(root, "stage3")) == ["a.txt", "b.bin", "rollouts"]
    with pytest.raises(FileNotFoundError):
        fileio.listdir(fileio.join(root, "nope"))

    moved = fileio.join(root, "stage3", "c.txt")
    fileio.replace(path, moved)
    assert not fileio.exists(path) and fileio.read_text(moved) == "één\ntwo\n"
    fileio.remove(moved)
    assert not fileio.exists(moved)
    if remote:  # what the layer stands in for: the store itself cannot append
        with pytest.raises(NotImplementedError):
            fileio.open(nested, "a")


def test_a_local_mirror_uploads_what_changed_and_the_marker_last(fake_gcs, monkeypatch, tmp_path):
    local = fileio.LocalMirror(str(tmp_path / "here"))
    assert local.local == str(tmp_path / "here") and local.push() == 0 and local.pull() == 0  # its own mirror

    mirror = fileio.LocalMirror("fakegcs://bucket/eval/step_000001")
    for name, text in [("results.json", "{}"), ("a.jsonl", "1\n"), ("sub/z.md", "z")]:
        os.makedirs(os.path.dirname(os.path.join(mirror.local, name)), exist_ok=True)
        with open(os.path.join(mirror.local, name), "w") as fh:
            fh.write(text)
    order = []
    put = FakeGCS.put_file
    monkeypatch.setattr(
        FakeGCS, "put_file", lambda self, lpath, rpath, **kw: (order.append(rpath), put(self, lpath, rpath, **kw))
    )
    assert mirror.push(last=("results.json",)) == 3
    assert [p.rsplit("step_000001/", 1)[1] for p in order] == ["a.jsonl", "sub/z.md", "results.json"]
    assert mirror.push() == 0  # nothing changed
    with open(os.path.join(mirror.local, "a.jsonl"), "a") as fh:
        fh.write("2\n")
    assert mirror.push() == 1 and fileio.read_text("fakegcs://bucket/eval/step_000001/a.jsonl") == "1\n2\n"
    mirror.close()
    assert not os.path.exists(mirror.local)

    again = fileio.LocalMirror("fakegcs://bucket/eval/step_000001")
    assert again.pull() == 3 and again.push() == 0  # pulled files count as uploaded
    assert fileio.read_text(os.path.join(again.local, "sub", "z.md")) == "z"
    assert again.pull("a.jsonl", "missing.jsonl") == 1
    again.close()


def test_metric_writer_on_an_object_store_uploads_and_a_rerun_appends(fake_gcs):
    logdir = "fakegcs://bucket/run/stage3/tb"
    with MetricWriter(logdir, sync_secs=0) as writer:
        writer.text(0, "config/operative", "a = 1", code=True)
        writer.scalars(0, {"loss/pg": 0.5, "reward/total": np.float32(1.0), "skip": float("nan")})
        rows = fileio.read_text(fileio.join(logdir, JSONL_NAME)).splitlines()  # uploaded at once (sync_secs=0)
        assert [json.loads(r) for r in rows] == [{"step": 0, "loss/pg": 0.5, "reward/total": 1.0}]
        writer.scalars(1, {"loss/pg": 0.25})
    with MetricWriter(logdir) as writer:  # a resumed run: its rows follow the earlier ones
        writer.scalars(2, {"loss/pg": 0.125})
    rows = [json.loads(r) for r in fileio.read_text(fileio.join(logdir, JSONL_NAME)).splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    events = [n for n in fileio.listdir(logdir) if n.startswith("events.out.tfevents.")]
    assert len(events) == 2  # one per writer (names unique to the run), both uploaded at close
    assert read_scalars(logdir)["loss/pg"] == [(0, 0.5), (1, 0.25), (2, 0.125)]  # TensorBoard reads fsspec URLs
    assert "a = 1" in read_texts(logdir)["config/operative"][0][1]


def test_a_local_metric_writer_writes_in_place(tmp_path):
    with MetricWriter(tmp_path / "tb") as writer:
        writer.scalars(0, {"x": 1.0})
    assert JSONL_NAME in os.listdir(tmp_path / "tb") and read_scalars(tmp_path / "tb")["x"] == [(0, 1.0)]


def test_best_json_and_the_summary_on_an_object_store(fake_gcs):
    from medr3_jax.trainer.periodic_eval import BEST_FILE, read_best  # noqa: PLC0415
    from medr3_jax.trainer.summary import SUMMARY_MD, SUMMARY_PNG, summarize_run  # noqa: PLC0415

    workdir = "fakegcs://bucket/run"
    assert read_best(fileio.join(workdir, "stage1", "eval")) is None
    fileio.atomic_write_text(fileio.join(workdir, "stage1", "eval", BEST_FILE), '{"step": 2, "accuracy": 0.5}')
    assert read_best(fileio.join(workdir, "stage1", "eval")) == {"step": 2, "accuracy": 0.5}
    fileio.write_text(fileio.join(workdir, "stage1", "eval", "step_000002", "results.json"),
                      json.dumps({"average": {"accuracy": 0.5, "format_rate": 1.0}}))  # fmt: skip
    with MetricWriter(fileio.join(workdir, "stage1", "tb")) as writer:
        writer.scalars(0, {"reward/total": 0.1})
        writer.scalars(1, {"reward/total": 0.3})
    table = summarize_run(workdir, ["stage1"])
    assert "| held-out accuracy (stage1 step 2 → stage1 step 2) | 0.500 | 0.500 | recorded once |" in table
    assert "+0.200 (up, better)" in table
    assert fileio.read_text(fileio.join(workdir, SUMMARY_MD)).startswith(f"Run {workdir}, stages stage1")
    with fileio.open(fileio.join(workdir, SUMMARY_PNG), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed: gs:// opens")
def test_gs_without_gcsfs_names_the_knob_and_the_install_command():
    with pytest.raises(ValueError, match=r"--workdir='gs://b/run': .*pip install 'medr3_jax\[gcs\]'"):
        fileio.check("gs://b/run", knob="--workdir")
    fileio.check("runs/local", knob="--workdir")  # a local path: nothing to check


def test_a_checkpoint_path_resolves_on_a_local_folder_and_on_an_object_store(root):
    """`--checkpoint` of export and evaluate (`checkpoints.resolve_checkpoint`): a run workdir gives
    the checkpoints/ of its highest-numbered stage holding a finished step (stage10 after stage3;
    a step Orbax is still writing under a temporary name does not count); a stage workdir, a
    checkpoints/ directory and a step directory stay as they are; missing or empty runs are named."""
    from medr3_jax.models.hf import CheckpointError  # noqa: PLC0415
    from medr3_jax.trainer.checkpoints import resolve_checkpoint  # noqa: PLC0415

    root = fileio.absolute(root)
    files = ["stage3/checkpoints/4/state/a", "stage3/checkpoints/6/state/a", "stage10/checkpoints/2/state/a",
             "stage11/checkpoints/3.orbax-checkpoint-tmp-17/state/a", "stage12/tb/events", "notes/x"]  # fmt: skip
    for name in files:
        fileio.makedirs(fileio.join(root, *name.split("/")[:-1]))
        fileio.write_text(fileio.join(root, *name.split("/")), "x")
    assert resolve_checkpoint(root) == fileio.join(root, "stage10", "checkpoints")
    for kept in ("stage3", "stage3/checkpoints", "stage3/checkpoints/4"):
        path = fileio.join(root, *kept.split("/"))
        assert resolve_checkpoint(path) == path
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_checkpoint(fileio.join(root, "missing"))
    empty = fileio.join(root, "notes")
    for name in ("stage1/tb/events", "stage2/checkpoints/1.orbax-checkpoint-tmp-3/a"):
        fileio.makedirs(fileio.join(empty, *name.split("/")[:-1]))
        fileio.write_text(fileio.join(empty, *name.split("/")), "x")
    with pytest.raises(CheckpointError, match=r"whose stages \(stage1, stage2\) hold no checkpoint"):
        resolve_checkpoint(empty)
