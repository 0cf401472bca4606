"""Remote inputs: a `gs://` (or any fsspec) URL where a model, checkpoint, dataset or index
directory is expected is copied once into a local cache, and the local copy is used.

The model loader and the retrieval index read their files through mmap and numpy, which need
local files; TPU VMs have local disks. Each process stages its own copy (hosts do not share
disks); a file is fetched again only when its remote fingerprint (size plus the store's
checksum, etag or modification time) differs from the one recorded when it was staged, so a
restarted or resumed run copies only what changed. Reading `gs://` needs gcsfs (`pip install
'medr3_jax[gcs]'`; `tpu/setup.sh` installs it).

    local = stage("gs://bucket/index/medcorp", knob="Experiment.index_dir")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import Any

from medr3_jax.assets import CACHE_ROOT

log = logging.getLogger(__name__)

CACHE_DIR = os.path.join(CACHE_ROOT, "remote")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class RemoteError(ValueError):
    """A remote input that cannot be staged; the message names the knob and the URL."""


def is_remote(path: str | None) -> bool:
    return bool(path) and _URL.match(str(path)) is not None


def stage(url: str, *, knob: str, cache_dir: str | None = None) -> str:
    """The local copy of the file or directory tree at `url` (under `cache_dir`, default
    `CACHE_DIR`, one folder per URL, keeping the URL's last name so that e.g. a `.gguf` suffix
    survives)."""
    import fsspec  # noqa: PLC0415

    cache_dir = cache_dir or CACHE_DIR
    scheme = _URL.match(url).group(1)
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise RemoteError(
            f"{knob}={url!r}: cannot read {scheme}:// URLs here ({err}); for gs:// install gcsfs "
            "(pip install 'medr3_jax[gcs]'), or copy the data to local disk (tpu/stage_data.sh)"
        ) from err
    root = root.rstrip("/")
    if not fs.exists(root):
        raise RemoteError(f"{knob}={url!r}: no such file or directory")
    name = os.path.basename(root) or "root"
    dest = os.path.join(cache_dir, hashlib.sha1(url.rstrip("/").encode()).hexdigest()[:16], name)
    is_dir = fs.isdir(root)
    if is_dir:
        infos = {path: info for path, info in fs.find(root, detail=True).items() if info["type"] == "file"}
        targets = {path: os.path.join(dest, _relative(fs, path, root)) for path in infos}
    else:
        infos, targets = {root: fs.info(root)}, {root: dest}
    record_path = dest.rstrip("/") + ".staged.json"  # beside the copy, so the copy equals the remote tree
    recorded = _read_record(record_path)
    fetched = 0
    for path, info in sorted(infos.items()):
        target, size, mark = targets[path], int(info["size"]), _fingerprint(info)
        rel = os.path.relpath(target, dest) if is_dir else "."
        if os.path.isfile(target) and os.path.getsize(target) == size and recorded.get(rel) == mark:
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        part = f"{target}.part{os.getpid()}"  # processes sharing a disk never write one file
        fs.get_file(path, part)
        got = os.path.getsize(part)
        if got != size:
            os.remove(part)
            raise RemoteError(f"{knob}={url!r}: {path} arrived with {got} of {size} bytes")
        os.replace(part, target)
        recorded[rel] = mark
        fetched += 1
    if is_dir:
        os.makedirs(dest, exist_ok=True)  # an empty remote directory stays a directory
        fetched += _remove_extra_files(dest, set(targets.values()), recorded)
    if fetched:
        part = f"{record_path}.part{os.getpid()}"
        with open(part, "w", encoding="utf-8") as fh:
            json.dump(recorded, fh)
        os.replace(part, record_path)
    total = sum(int(info["size"]) for info in infos.values())
    log.info("%s: %s staged in %s (%d files, %d fetched, %.1f MB)", knob, url, dest, len(infos), fetched, total / 1e6)
    return dest


def _remove_extra_files(dest: str, keep: set[str], recorded: dict[str, str]) -> int:
    """Deletes files of an earlier copy that the remote tree no longer has (the copy mirrors
    it); returns how many."""
    removed = 0
    for folder, _, names in os.walk(dest):
        for name in names:
            path = os.path.join(folder, name)
            if path not in keep and ".part" not in name:
                os.remove(path)
                recorded.pop(os.path.relpath(path, dest), None)
                removed += 1
    return removed


def _fingerprint(info: dict[str, Any]) -> str:
    """What identifies a remote file's content without reading it: size and the first of the
    store's checksum / etag / modification time that the listing has."""
    for key in ("md5Hash", "crc32c", "ETag", "etag", "generation", "updated", "LastModified", "mtime"):
        if info.get(key) is not None:
            return f"{info['size']}:{key}={info[key]}"
    return f"{info['size']}"


def _read_record(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: every file is fetched again


def _relative(fs, path: str, root: str) -> str:
    """`path` below `root`, as a local relative path (fsspec paths drop the scheme)."""
    path, root = fs._strip_protocol(path), fs._strip_protocol(root)
    rel = path[len(root) :].lstrip("/")
    if not path.startswith(root) or not rel or ".." in rel.split("/"):
        raise RemoteError(f"{path!r} is not below {root!r}")
    return rel
