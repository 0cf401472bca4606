"""Remote inputs: a fake gs:// filesystem (fsspec, backed by a temporary directory) stands in for
Cloud Storage. A staged tree is byte-identical, a second start fetches nothing, a changed file
(new size, or same size and a new modification time) is fetched again, a single file keeps its name; bad URLs name the knob; the train loop swaps every
remote input for its local copy (a remote workdir is written directly: tests/test_fileio.py)."""

from __future__ import annotations

import importlib
import os

import fsspec
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from medr3_jax.remote import RemoteError, is_remote, stage
from medr3_jax.trainer.experiment import Experiment, stage_remote_inputs


@pytest.fixture
def bucket(tmp_path):
    """gs:// URLs read from tmp_path/gcs (the fake is registered for this test only)."""
    root = tmp_path / "gcs"
    root.mkdir()

    class FakeGCS(DirFileSystem):
        protocol = "gs"
        cachable = False

        def __init__(self, *args, **kwargs):
            super().__init__(path=str(root), fs=LocalFileSystem())

    fsspec.register_implementation("gs", FakeGCS, clobber=True)
    yield root
    importlib.import_module("fsspec.registry")._registry.pop("gs", None)  # back to gcsfs, if installed


def _tree(root) -> dict[str, bytes]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def test_a_directory_is_staged_once_and_changed_files_again(bucket, tmp_path):
    index = bucket / "b" / "index"
    (index / "shards").mkdir(parents=True)
    (index / "manifest.json").write_text('{"count": 3}')
    (index / "shards" / "0.npy").write_bytes(bytes(range(256)) * 40)
    (index / "shards" / "1.npy").write_bytes(b"\x00\xff" * 7)
    cache = str(tmp_path / "cache")

    local = stage("gs://b/index/", knob="Experiment.index_dir", cache_dir=cache)
    assert os.path.basename(local) == "index" and local.startswith(cache)
    assert _tree(local) == _tree(index)

    mtimes = {p: os.stat(os.path.join(local, p)).st_mtime_ns for p in _tree(local)}
    assert stage("gs://b/index", knob="Experiment.index_dir", cache_dir=cache) == local  # same folder
    assert {p: os.stat(os.path.join(local, p)).st_mtime_ns for p in mtimes} == mtimes  # nothing fetched

    (index / "manifest.json").write_text('{"count": 30}')  # a new size: fetched again
    (index / "shards" / "2.npy").write_bytes(b"new")
    (index / "shards" / "0.npy").rename(index / "shards" / "0b.npy")  # renamed: the old copy goes
    (index / "shards" / "1.npy").write_bytes(b"\xff\x00" * 7)  # same size, new modification time
    later = os.stat(index / "shards" / "1.npy").st_mtime + 10
    os.utime(index / "shards" / "1.npy", (later, later))
    stage("gs://b/index", knob="Experiment.index_dir", cache_dir=cache)
    assert _tree(local) == _tree(index)
    assert not os.path.exists(os.path.join(local, "shards", "0.npy"))
    assert not [p for p in os.listdir(cache) + list(_tree(local)) if ".part" in p]


def test_a_single_file_keeps_its_name(bucket, tmp_path):
    (bucket / "m").mkdir()
    (bucket / "m" / "model.Q8_0.gguf").write_bytes(b"GGUF" + bytes(100))
    local = stage("gs://m/model.Q8_0.gguf", knob="Experiment.model", cache_dir=str(tmp_path / "c"))
    assert local.endswith("model.Q8_0.gguf") and open(local, "rb").read() == b"GGUF" + bytes(100)


def test_bad_urls_name_the_knob(bucket, tmp_path):
    with pytest.raises(RemoteError, match=r"Experiment.data_dir='gs://b/nothing': no such file or directory"):
        stage("gs://b/nothing", knob="Experiment.data_dir", cache_dir=str(tmp_path))
    with pytest.raises(RemoteError, match=r"Experiment.model='nosuch://x/y': cannot read nosuch:// URLs"):
        stage("nosuch://x/y", knob="Experiment.model", cache_dir=str(tmp_path))


def test_the_planner_reads_a_remote_models_config(bucket, monkeypatch, tmp_path):
    import json  # noqa: PLC0415

    from medr3_jax.models.config import PRESETS  # noqa: PLC0415
    from medr3_jax.plan import resolve_model  # noqa: PLC0415

    (bucket / "b" / "llama").mkdir(parents=True)
    (bucket / "b" / "llama" / "config.json").write_text(json.dumps(PRESETS["llama3_1_8b_instruct"].to_hf_config()))
    (bucket / "b" / "llama" / "model-00001-of-00004.safetensors").write_bytes(b"weights, never fetched")
    monkeypatch.setattr("medr3_jax.remote.CACHE_DIR", str(tmp_path / "cache"))
    config, _ = resolve_model(Experiment(model="gs://b/llama", param_dtype="bfloat16"), None)
    assert config == PRESETS["llama3_1_8b_instruct"].replace(param_dtype="bfloat16", compute_dtype="bfloat16")
    fetched = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert fetched == ["config.json", "config.json.staged.json"]  # the copy and its fingerprint record


def test_the_loop_uses_local_copies_of_remote_inputs(bucket, monkeypatch, tmp_path):
    (bucket / "b" / "tfds" / "medqa").mkdir(parents=True)
    (bucket / "b" / "tfds" / "medqa" / "x.json").write_text("{}")
    (bucket / "b" / "ckpt").mkdir()
    (bucket / "b" / "ckpt" / "meta.json").write_text("{}")
    monkeypatch.setattr("medr3_jax.remote.CACHE_DIR", str(tmp_path / "cache"))
    exp = Experiment(model="random:tiny", data_dir="gs://b/tfds", init_from="gs://b/ckpt")
    local = stage_remote_inputs(exp)
    assert (local.model, local.index_dir) == ("random:tiny", None)  # local or unset: untouched
    assert not is_remote(local.data_dir) and _tree(local.data_dir) == _tree(bucket / "b" / "tfds")
    assert _tree(local.init_from) == {"meta.json": b"{}"}
