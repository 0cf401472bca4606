"""Files under the training workdir, local or remote: one small layer over `os` for local paths
(the very calls the trainer made before) and fsspec for URLs (`gs://bucket/run` through gcsfs,
`pip install 'medr3_jax[gcs]'`; any registered fsspec protocol otherwise).

    path = join(workdir, "stage3", "operative_config.gin")
    write_text(path, text)                     # atomic_write_text: never half a file
    mirror = LocalMirror(join(workdir, "stage3", "tb"))   # for libraries that write local files
    ... write into mirror.local ...; mirror.push(); mirror.close()

Object stores have no append and no atomic rename; where the trainer relied on them:
- `atomic_write_text`: local, a temporary file renamed over the target (as before); remote,
  one object written when the file closes (an object appears whole or not at all).
- `append_text`: local, append; remote, the object read and written again whole (small files).
- `replace`: local `os.replace`; remote, copy then delete (not atomic: use atomic_write_text).
- `LocalMirror`: TensorBoard event files and evaluation predictions are written by libraries
  with plain local IO into a local temporary folder, and `push` uploads the files that changed.
  A local directory is its own mirror (no copy, push does nothing).
Orbax checkpoints are not written through this layer: Orbax writes gs:// itself (etils.epath
for its metadata, tensorstore for the arrays); only our own checks around it are.
"""

from __future__ import annotations

import builtins
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import IO, Any

from medr3_jax.remote import is_remote

__all__ = [
    "LocalMirror",
    "absolute",
    "append_text",
    "atomic_write_text",
    "check",
    "exists",
    "filesystem",
    "is_remote",
    "isdir",
    "isfile",
    "join",
    "listdir",
    "makedirs",
    "open",
    "read_text",
    "remove",
    "replace",
    "write_text",
]


def filesystem(url: str, *, knob: str = "workdir") -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of a URL; a protocol fsspec cannot open (gs:// without
    gcsfs) is a ValueError naming `knob` and the install command."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        scheme = str(url).split("://", 1)[0]
        raise ValueError(
            f"{knob}={url!r}: cannot write {scheme}:// URLs here ({err}); for gs:// install gcsfs: "
            "pip install 'medr3_jax[gcs]'"
        ) from err


def check(path: str, *, knob: str) -> None:
    """Fails early, naming `knob`, when `path` is a URL whose filesystem is not installed."""
    if is_remote(path):
        filesystem(path, knob=knob)


def join(path: str, *parts: str) -> str:
    """`os.path.join`; URLs join with "/" alike (posix), keeping their scheme."""
    return os.path.join(path, *parts)


def absolute(path: str) -> str:
    """`os.path.abspath` of a local path; a URL as it is."""
    return path if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    fs, inner = filesystem(path)
    return fs.exists(inner)


def isdir(path: str) -> bool:
    """A directory, or on an object store a prefix that holds objects."""
    if not is_remote(path):
        return os.path.isdir(path)
    fs, inner = filesystem(path)
    return fs.isdir(inner)


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(path)
    fs, inner = filesystem(path)
    return fs.isfile(inner)


def makedirs(path: str) -> None:
    """`os.makedirs(path, exist_ok=True)`; remote, the store's own (a no-op inside a bucket)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
        return
    fs, inner = filesystem(path)
    fs.makedirs(inner, exist_ok=True)


def listdir(path: str) -> list[str]:
    """The names (not paths) in a directory, sorted; a missing directory is FileNotFoundError."""
    if not is_remote(path):
        return sorted(os.listdir(path))
    fs, inner = filesystem(path)
    if not fs.isdir(inner):
        raise FileNotFoundError(f"{path}: no such directory")
    return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False))


def open(path: str, mode: str = "r", *, encoding: str | None = None) -> IO[Any]:
    """`open`; remote, fsspec's (object stores: "r", "w", "rb", "wb" only; no append)."""
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    if not is_remote(path):
        return builtins.open(path, mode, encoding=encoding)
    fs, inner = filesystem(path)
    return fs.open(inner, mode, encoding=encoding) if encoding else fs.open(inner, mode)


def read_text(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def write_text(path: str, text: str) -> None:
    """Writes `text` (utf-8), replacing the file."""
    with open(path, "w") as fh:
        fh.write(text)


def append_text(path: str, text: str) -> None:
    """Appends `text`; remote, the object is read and written again whole (object stores cannot
    append: for small files; a growing log goes through a `LocalMirror` instead)."""
    if not is_remote(path):
        with open(path, "a") as fh:
            fh.write(text)
        return
    old = read_text(path) if exists(path) else ""
    write_text(path, old + text)


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` so that a reader never sees half of it: local, a temporary file beside the
    target renamed over it (its folder made first); remote, one object written at close."""
    if is_remote(path):
        write_text(path, text)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def replace(src: str, dst: str) -> None:
    """`os.replace`; remote, a move within the store (copy then delete: not atomic)."""
    if not is_remote(src) and not is_remote(dst):
        os.replace(src, dst)
        return
    if is_remote(src) != is_remote(dst):
        raise ValueError(f"replace({src!r}, {dst!r}): both paths must be local or both remote")
    fs, inner = filesystem(src)
    fs.mv(inner, filesystem(dst)[1])


def remove(path: str) -> None:
    if not is_remote(path):
        os.remove(path)
        return
    fs, inner = filesystem(path)
    fs.rm(inner)


class LocalMirror:
    """A directory that a library writes with plain local IO (tensorboardX's event files, the
    evaluation's predictions): for a URL, a local temporary folder whose changed files `push`
    uploads (each whole, replacing the object); for a local path, the path itself.

        mirror = LocalMirror(remote_dir)
        mirror.pull("metrics.jsonl")   # continue a file an earlier run left there
        ... write files under mirror.local ...
        mirror.push(last=("results.json",))
        mirror.close()                 # removes the temporary folder
    """

    def __init__(self, path: str):
        self.path = path
        self.remote = is_remote(path)
        self.local = tempfile.mkdtemp(prefix="medr3_jax_mirror_") if self.remote else path
        self._pushed: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last uploaded

    def pull(self, *names: str) -> int:
        """Downloads the named files (default: every file below the directory) that exist
        remotely; returns how many. A no-op for a local directory."""
        if not self.remote:
            return 0
        fs, root = filesystem(self.path)
        root = root.rstrip("/")
        if names:
            wanted = [f"{root}/{n}" for n in names]
            found = [p for p in wanted if fs.isfile(p)]
        else:
            found = fs.find(root) if fs.isdir(root) else []
        for remote_file in found:
            rel = fs._strip_protocol(remote_file)[len(fs._strip_protocol(root)) :].lstrip("/")
            target = os.path.join(self.local, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.get_file(remote_file, target)
            self._pushed[rel] = self._mark(target)
        return len(found)

    def push(self, *, last: Sequence[str] = ()) -> int:
        """Uploads the files written or changed since the last push (the names in `last` after
        the others, e.g. a file whose presence says the rest is complete); returns how many."""
        if not self.remote:
            return 0
        changed = []
        for folder, _, files in os.walk(self.local):
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), self.local)
                if self._pushed.get(rel) != self._mark(os.path.join(self.local, rel)):
                    changed.append(rel)
        changed.sort(key=lambda rel: (rel in last, rel))
        fs, root = filesystem(self.path)
        for rel in changed:
            local_file = os.path.join(self.local, rel)
            mark = self._mark(local_file)
            fs.put_file(local_file, f"{root.rstrip('/')}/{rel.replace(os.sep, '/')}")
            self._pushed[rel] = mark
        return len(changed)

    def close(self) -> None:
        """Removes the local temporary folder (push first); a local directory stays."""
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)

    @staticmethod
    def _mark(path: str) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
