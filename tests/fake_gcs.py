"""A fake object store for the remote-workdir tests: an in-memory fsspec filesystem registered
under the made-up protocol `fakegcs://`, behaving like Cloud Storage where our code could rely on
a local disk: whole objects only (read "rb" or write "wb"; no append, no read-write), so a
writer that appends or renames in place fails here as it would on gs://."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import ClassVar

import fsspec
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.utils import stringify_path

PROTOCOL = "fakegcs"


class FakeGCS(MemoryFileSystem):
    protocol = PROTOCOL
    store: ClassVar[dict] = {}  # its own store, not MemoryFileSystem's global one
    pseudo_dirs: ClassVar[list[str]] = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = stringify_path(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = "memory://" + path[len(PROTOCOL) + 3 :]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        if mode not in ("rb", "wb"):
            raise NotImplementedError(f"{PROTOCOL}: mode {mode!r}; an object is read or written whole")
        return super()._open(path, mode, **kwargs)


@contextlib.contextmanager
def registered() -> Iterator[FakeGCS]:
    """An empty `fakegcs://` store, registered with fsspec inside the block; yields the filesystem."""
    FakeGCS.store.clear()
    FakeGCS.pseudo_dirs[:] = [""]
    fsspec.register_implementation(PROTOCOL, FakeGCS, clobber=True)
    try:
        yield fsspec.filesystem(PROTOCOL)
    finally:
        importlib.import_module("fsspec.registry")._registry.pop(PROTOCOL, None)
        FakeGCS.store.clear()
        FakeGCS.pseudo_dirs[:] = [""]
