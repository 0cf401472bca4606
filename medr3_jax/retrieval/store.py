"""The index directory on disk, read by random access: `IndexManifest` (manifest.json, read and
written here and nowhere else) and `PassageStore` (a passage's text, id and policy tokens by row,
memory-mapped per shard), so that opening an index costs O(shards), not O(passages).

    manifest = IndexManifest.read("index/medcorp")
    store = PassageStore.open("index/medcorp", manifest)
    store.passage(12), store.rows(["pubmed23n0001_0"]), store.tokens([12, 40])

Files, per shard XXXXX (`write_shard`):
  table_XXXXX.npy      [rows, D] float16 / bfloat16 embeddings (written last: marks the shard done)
  passages_XXXXX.jsonl one {"id", "title", "contents"} line per passage
  offsets_XXXXX.npy    int64 [rows + 1], the byte offset of each line (the last: the file's size)
  ids_XXXXX.npy        the passage ids in row order, fixed-width UTF-8 bytes
  tokens_XXXXX.npy     [rows, passage_tokens] int32, pad-filled, + lengths_XXXXX.npy [rows]
                       (the policy's tokens; only with a policy tokenizer)
and for the whole index (`write_id_index`, when the last shard is done):
  ids_sorted.npy + ids_rows.npy   every id sorted, and its row: id -> row by binary search.

Indexes written before the random-access files existed (format 1) get them derived on open,
once, in place (`upgrade`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from medr3_jax.retrieval.corpus import Passage

log = logging.getLogger("medr3_jax.retrieval")

MANIFEST = "manifest.json"
FORMAT = 2  # 1: no offsets / ids files; 2: random access (this module)
ID_INDEX = ("ids_sorted.npy", "ids_rows.npy")


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """`write(fh)` into a temporary file beside `path`, then renamed over it: a reader (or a
    concurrent writer of the same bytes) never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard of the index: its number and the rows [lo, hi) it holds."""

    index: int
    rows: tuple[int, int]

    def file(self, index_dir: str, prefix: str, suffix: str = ".npy") -> str:
        return os.path.join(index_dir, f"{prefix}_{self.index:05d}{suffix}")

    @property
    def size(self) -> int:
        return self.rows[1] - self.rows[0]


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexManifest:
    """What `retrieval.embed` wrote: the encoders and their settings, the shards and the corpus
    checksum. `complete` is set once every shard is written; a Retriever opens only complete
    indexes."""

    encoder: str
    query_encoder: str
    style: str | None = None
    dtype: str = "float16"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # EmbedSettings, as a dict
    shards: tuple[Shard, ...] = ()
    dim: int | None = None
    count: int | None = None
    corpus_sha256: str | None = None
    complete: bool = False
    format: int = FORMAT

    @property
    def num_rows(self) -> int:
        return self.count if self.count is not None else max((s.rows[1] for s in self.shards), default=0)

    @property
    def query_encoder_dir(self) -> str:
        return self.query_encoder or self.encoder

    @property
    def query_width(self) -> int:
        """Encoder tokens per query (EmbedSettings.query_max_len, else max_len)."""
        return int(self.settings.get("query_max_len") or self.settings["max_len"])

    def table_key(self) -> dict[str, Any]:
        """What identifies the table's contents (a cached ScaNN index is reused only under it)."""
        return {"corpus_sha256": self.corpus_sha256, "encoder": self.encoder, "dtype": self.dtype,
                "count": self.count, "dim": self.dim, "style": self.style}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["shards"] = [{"index": s.index, "table": f"table_{s.index:05d}.npy", "rows": list(s.rows)}
                         for s in self.shards]  # fmt: skip
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any], *, where: str = MANIFEST) -> IndexManifest:
        """A manifest from its JSON; keys written before a field existed take that field's
        default (same query encoder, no style, format 1). A missing required key names the file."""
        try:
            settings = dict(obj.get("settings") or {})
            settings.setdefault("query_max_len", None)
            return cls(
                encoder=obj["encoder"], query_encoder=obj.get("query_encoder") or obj["encoder"],
                style=obj.get("style"), dtype=obj.get("dtype", "float16"), settings=settings,
                shards=tuple(Shard(int(s["index"]), (int(s["rows"][0]), int(s["rows"][1]))) for s in obj.get("shards", [])),
                dim=obj.get("dim"), count=obj.get("count"), corpus_sha256=obj.get("corpus_sha256"),
                complete=bool(obj.get("complete")), format=int(obj.get("format", 1)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ValueError(
                f"{where}: not a manifest that retrieval.embed writes ({type(err).__name__}: {err})"
            ) from err

    @classmethod
    def read(cls, index_dir: str) -> IndexManifest:
        path = os.path.join(index_dir, MANIFEST)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: not an index directory (run python -m medr3_jax.retrieval.embed)")
        try:
            with open(path, encoding="utf-8") as fh:
                obj = json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from err
        return cls.from_json(obj, where=path)

    @classmethod
    def exists(cls, index_dir: str) -> bool:
        return os.path.exists(os.path.join(index_dir, MANIFEST))

    def write(self, index_dir: str) -> None:
        text = json.dumps(self.to_json(), indent=1).encode()
        atomic_write(os.path.join(index_dir, MANIFEST), lambda fh: fh.write(text))


# ---- writing ---------------------------------------------------------------------------------------


def id_array(ids: Sequence[str]) -> np.ndarray:
    """Ids as fixed-width UTF-8 bytes (numpy 'S<n>': sortable and searchable on a memory map)."""
    encoded = [i.encode("utf-8") for i in ids]
    width = max((len(e) for e in encoded), default=1)
    return np.array(encoded, dtype=f"S{max(width, 1)}")


def write_shard(index_dir: str, shard: Shard, passages: Sequence[Passage], table: np.ndarray,
                tokens: np.ndarray | None = None, lengths: np.ndarray | None = None) -> None:  # fmt: skip
    """One shard's files, each atomically; the table last, so that a shard whose table exists
    is whole (an interrupted run redoes only the shards without one)."""
    if len(passages) != shard.size or table.shape[0] != shard.size:
        raise ValueError(f"shard {shard.index}: {len(passages)} passages and {table.shape[0]} table rows for "
                         f"rows {shard.rows}")  # fmt: skip
    if tokens is not None:
        atomic_write(shard.file(index_dir, "tokens"), lambda fh: np.save(fh, tokens))
        atomic_write(shard.file(index_dir, "lengths"), lambda fh: np.save(fh, lengths))
    lines = [json.dumps({"id": p.id, "title": p.title, "contents": p.contents}).encode() + b"\n" for p in passages]
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    atomic_write(shard.file(index_dir, "passages", ".jsonl"), lambda fh: fh.writelines(lines))
    atomic_write(shard.file(index_dir, "offsets"), lambda fh: np.save(fh, offsets))
    atomic_write(shard.file(index_dir, "ids"), lambda fh: np.save(fh, id_array([p.id for p in passages])))
    atomic_write(shard.file(index_dir, "table"), lambda fh: np.save(fh, table))


def shard_done(index_dir: str, shard: Shard) -> bool:
    return os.path.exists(shard.file(index_dir, "table"))


def write_id_index(index_dir: str, shards: Sequence[Shard]) -> int:
    """ids_sorted.npy + ids_rows.npy from the shards' id files; returns the number of ids that
    occur more than once (a lookup of such an id finds its first row)."""
    ids = np.concatenate([np.load(s.file(index_dir, "ids")) for s in shards]) if shards else np.zeros(0, "S1")
    order = np.argsort(ids, kind="stable")
    ids_sorted = ids[order]
    duplicates = int(np.count_nonzero(ids_sorted[1:] == ids_sorted[:-1]))
    atomic_write(os.path.join(index_dir, ID_INDEX[1]), lambda fh: np.save(fh, order.astype(np.int64)))
    atomic_write(os.path.join(index_dir, ID_INDEX[0]), lambda fh: np.save(fh, ids_sorted))
    if duplicates:
        log.warning("%s: %d passage ids occur more than once; a lookup finds the first row", index_dir, duplicates)
    return duplicates


def upgrade(index_dir: str, manifest: IndexManifest) -> IndexManifest:
    """A format-1 index (passages as plain JSON lines, no offsets or id files) gets its offsets,
    ids and id index derived from the passage files, in place; returns the format-2 manifest."""
    log.info("%s: deriving the random-access files (offsets, ids) of an index written before them (once)", index_dir)
    for shard in manifest.shards:
        path = shard.file(index_dir, "passages", ".jsonl")
        data = np.fromfile(path, np.uint8)
        ends = np.flatnonzero(data == ord("\n")) + 1
        if data.size and data[-1] != ord("\n"):
            ends = np.append(ends, data.size)  # format 1 wrote no newline after the last line
        offsets = np.concatenate([[0], ends]).astype(np.int64)
        if len(offsets) - 1 != shard.size:
            raise ValueError(f"{path}: {len(offsets) - 1} lines for the {shard.size} rows the manifest gives it")
        raw = data.tobytes()
        ids = [json.loads(raw[lo:hi])["id"] for lo, hi in zip(offsets[:-1], offsets[1:])]
        atomic_write(shard.file(index_dir, "offsets"), lambda fh, offsets=offsets: np.save(fh, offsets))
        atomic_write(shard.file(index_dir, "ids"), lambda fh, ids=ids: np.save(fh, id_array(ids)))
    write_id_index(index_dir, manifest.shards)
    upgraded = dataclasses.replace(manifest, format=FORMAT)
    upgraded.write(index_dir)
    return upgraded


# ---- reading ---------------------------------------------------------------------------------------


class PassageStore:
    """Passages, ids and policy tokens by row, from memory-mapped shard files: opening reads the
    shards' small headers; a lookup reads the pages it touches."""

    def __init__(self, index_dir: str, manifest: IndexManifest):
        self.index_dir, self.manifest = index_dir, manifest
        self.starts = np.array([s.rows[0] for s in manifest.shards] + [manifest.num_rows], np.int64)
        self._text = [np.memmap(s.file(index_dir, "passages", ".jsonl"), np.uint8, mode="r") if s.size else None
                      for s in manifest.shards]  # fmt: skip
        self._offsets = [np.load(s.file(index_dir, "offsets"), mmap_mode="r") for s in manifest.shards]
        self._ids = [np.load(s.file(index_dir, "ids"), mmap_mode="r") for s in manifest.shards]
        self._ids_sorted = np.load(os.path.join(index_dir, ID_INDEX[0]), mmap_mode="r")
        self._ids_rows = np.load(os.path.join(index_dir, ID_INDEX[1]), mmap_mode="r")
        have_tokens = all(os.path.exists(s.file(index_dir, "tokens")) for s in manifest.shards)
        self._tokens = (
            [np.load(s.file(index_dir, "tokens"), mmap_mode="r") for s in manifest.shards] if have_tokens else None
        )
        self._lengths = (
            [np.load(s.file(index_dir, "lengths"), mmap_mode="r") for s in manifest.shards] if have_tokens else None
        )

    @classmethod
    def open(cls, index_dir: str, manifest: IndexManifest) -> PassageStore:
        if manifest.format < FORMAT:
            try:
                manifest = upgrade(index_dir, manifest)
            except OSError as err:
                raise OSError(f"{index_dir}: an index written before its random-access files (format "
                              f"{manifest.format}) gets them on first open, in place, and that failed ({err}); open "
                              "it once from a writable copy") from err  # fmt: skip
        return cls(index_dir, manifest)

    def __len__(self) -> int:
        return self.manifest.num_rows

    @property
    def has_tokens(self) -> bool:
        return self._tokens is not None

    def _locate(self, row: int) -> tuple[int, int]:
        """(shard position, row within the shard)."""
        if not 0 <= row < len(self):
            raise IndexError(f"{self.index_dir}: row {row} outside [0, {len(self)})")
        s = int(np.searchsorted(self.starts, row, side="right")) - 1
        return s, row - int(self.starts[s])

    def passage(self, row: int) -> Passage:
        s, i = self._locate(int(row))
        lo, hi = int(self._offsets[s][i]), int(self._offsets[s][i + 1])
        obj = json.loads(self._text[s][lo:hi].tobytes())
        return Passage(obj["id"], obj["title"], "", obj["contents"])

    def ids(self, rows: Iterable[int]) -> list[str]:
        """The passage id of each row."""
        out = []
        for row in rows:
            s, i = self._locate(int(row))
            out.append(bytes(self._ids[s][i]).decode("utf-8"))
        return out

    def rows(self, passage_ids: Sequence[str]) -> list[int]:
        """Row of each id (binary search over the sorted ids); an unknown id raises KeyError."""
        keys = np.array([i.encode("utf-8") for i in passage_ids], dtype=self._ids_sorted.dtype)
        found = np.searchsorted(self._ids_sorted, keys)
        out = []
        for pid, key, at in zip(passage_ids, keys, found):
            # a key longer than the stored width is cut by the dtype: compare the real id, not the cut
            if at >= len(self._ids_sorted) or self._ids_sorted[at] != key or len(pid.encode("utf-8")) > keys.itemsize:
                raise KeyError(f"{self.index_dir}: no passage with id {pid!r}")
            out.append(int(self._ids_rows[at]))
        return out

    def tokens(self, rows: Iterable[int]) -> list[list[int]]:
        """The policy's pre-tokenised text of each row (from the embed run's store)."""
        if self._tokens is None:
            raise ValueError(f"{self.index_dir}: no passage store; run embed with --policy_tokenizer")
        out = []
        for row in rows:
            s, i = self._locate(int(row))
            out.append(np.asarray(self._tokens[s][i, : int(self._lengths[s][i])]).tolist())
        return out

    def iter_contents(self) -> Iterable[str]:
        """Every passage's contents in row order (BM25 indexing), read shard by shard."""
        for s, shard in enumerate(self.manifest.shards):
            if not shard.size:
                continue
            raw = self._text[s].tobytes()
            offsets = np.asarray(self._offsets[s])
            for lo, hi in zip(offsets[:-1], offsets[1:]):
                yield json.loads(raw[lo:hi])["contents"]
