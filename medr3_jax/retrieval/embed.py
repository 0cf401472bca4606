"""`python -m medr3_jax.retrieval.embed`: corpus -> embedding table shards + manifest + passage store.

    python -m medr3_jax.retrieval.embed --corpus corpus/textbooks/chunk corpus/pubmed/chunk \
        --encoder minilm --out index/medcorp --policy_tokenizer /ckpt/Qwen2.5-7B

Writes, per shard of `--shard_rows` passages: `table_XXXXX.npy` ([rows, D], float16 or
bfloat16), `passages_XXXXX.jsonl` (id, title, contents) and, with a policy tokenizer,
`tokens_XXXXX.npy` ([rows, passage_tokens] int32, pad-filled) + `lengths_XXXXX.npy`, so the
rollout never re-tokenises, and the random-access files of `retrieval.store` (line offsets, ids,
the sorted id index). `manifest.json` (`store.IndexManifest`) lists the shards with their row
ranges, the encoder, dim, dtype, count and a corpus checksum. Each shard's table is written
last, atomically: an interrupted run redoes only the shards without one and gives
byte-identical files.

Across processes or hosts that share the output directory, each embeds every N-th shard:

    python -m medr3_jax.retrieval.embed ... --num_processes 4 --process_id 0   # on host 0, etc.

(with `--coordinator_address` or on a TPU pod, JAX's own process numbering); the process that
finishes last writes the manifest. A line per shard gives the throughput and an ETA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import sys
import time
from typing import Any, Iterator, Sequence

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from medr3_jax.cli import ArgumentParser, entry_point
from medr3_jax.models.encoder import ENCODER_STYLES, BertEncoder, encoder_inputs, load_encoder, load_encoder_tokenizer
from medr3_jax.progress import Progress
from medr3_jax.protocol import scrub_passage
from medr3_jax.retrieval.corpus import Passage, chunk_files, read_chunks
from medr3_jax.retrieval.store import MANIFEST, IndexManifest, Shard, shard_done, write_id_index, write_shard

log = logging.getLogger("medr3_jax.retrieval.embed")
DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
PASSAGE_BUCKETS = (64, 128, 256, 512)  # a batch is padded to the smallest that holds its longest passage


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbedSettings:
    shard_rows: int = 100_000
    batch_size: int = 256
    max_len: int = 256  # encoder tokens per passage
    dtype: str = "float16"
    passage_tokens: int = 256  # policy tokens kept per passage in the store
    query_max_len: int | None = None  # encoder tokens per query (Retriever); None = max_len. MedCPT: 64

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; expected one of {sorted(DTYPES)}")


def _shards(passages: Iterator[Passage], rows: int) -> Iterator[list[Passage]]:
    while shard := list(itertools.islice(passages, rows)):
        yield shard


class _Embedder:
    """Batches of texts -> pooled vectors, jitted once per batch shape, batch over all devices."""

    def __init__(self, encoder: BertEncoder, tokenizer: Any, settings: EmbedSettings, mesh: jax.sharding.Mesh | None):
        self.encoder, self.tokenizer, self.settings, self.mesh = encoder, tokenizer, settings, mesh
        self._embed = nnx.jit(lambda model, tokens, mask: model.embed(tokens, mask))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        s = self.settings
        out = []
        prefix = self.encoder.config.passage_prefix
        for lo in range(0, len(texts), s.batch_size):
            batch = list(texts[lo : lo + s.batch_size])
            real = len(batch)
            batch += [""] * (s.batch_size - real)  # one shape: one compile
            tokens, mask = encoder_inputs(
                self.tokenizer, batch, max_len=s.max_len, prefix=prefix, buckets=PASSAGE_BUCKETS
            )
            if self.mesh is not None:
                spec = NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.mesh.axis_names))
                tokens, mask = jax.device_put(tokens, spec), jax.device_put(mask, spec)
            out.append(np.asarray(self._embed(self.encoder, tokens, mask))[:real])
        return np.concatenate(out).astype(DTYPES[s.dtype])


def _policy_tokens(policy_tokenizer: Any, texts: Sequence[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """The passage store: each text without search/document tags (`protocol.scrub_passage`, as
    the authors scrub retrieved chunks), tokenised and cut to `width`."""
    tokens = np.full((len(texts), width), policy_tokenizer.pad_id, np.int32)
    lengths = np.zeros(len(texts), np.int32)
    for i, text in enumerate(texts):
        ids = policy_tokenizer.encode(scrub_passage(text))[:width]
        tokens[i, : len(ids)], lengths[i] = ids, len(ids)
    return tokens, lengths


def embed_corpus(
    corpus: Sequence[str],
    encoder_dir: str,
    out_dir: str,
    *,
    settings: EmbedSettings = EmbedSettings(),
    policy_tokenizer: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    max_shards: int | None = None,
    query_encoder_dir: str | None = None,
    style: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> IndexManifest:
    """Embeds this process's shards; returns the manifest (complete once every shard is done).

    Shard i belongs to process i % process_count: every process reads the whole corpus (for
    the row ranges and the checksum) and embeds only its own shards, skipping those already
    written (resume per shard). The process that finds every shard done writes the id index
    and the final manifest, so N processes give the files one process gives, byte for byte.
    `max_shards` stops after that many shards written (a partial run).

    query_encoder_dir: a separate query encoder (MedCPT's Query-Encoder beside its
    Article-Encoder), recorded in the manifest for the Retriever; default: `encoder_dir`.
    style: a preset of `ENCODER_STYLES` (pooling, normalisation, prefixes) applied to both
    encoders, for checkpoints without sentence-transformers files (MedCPT, BGE, e5).
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process {process_index} of {process_count}: expected 0 <= process_id < num_processes")
    files = chunk_files(corpus)  # a missing corpus is an error before anything is written
    os.makedirs(out_dir, exist_ok=True)
    encoder = load_encoder(encoder_dir, **style_overrides(style))
    tokenizer = load_encoder_tokenizer(encoder_dir)
    embedder = _Embedder(encoder, tokenizer, settings, mesh)
    fresh = IndexManifest(encoder=os.path.abspath(encoder_dir), style=style, dtype=settings.dtype,
                          query_encoder=os.path.abspath(query_encoder_dir or encoder_dir),
                          settings=dataclasses.asdict(settings), dim=encoder.config.hidden_size)  # fmt: skip
    _check_or_start(out_dir, fresh)
    checksum, count, shards, written, written_rows = hashlib.sha256(), 0, [], 0, 0
    total = sum(_line_count(f) for f in files)
    num_shards = -(-total // settings.shard_rows)
    mine = sum(1 for i in range(num_shards) if i % process_count == process_index)  # left to write, for the ETA
    progress = Progress("embedding the corpus", total, "passages")
    started = time.perf_counter()
    for index, passages in enumerate(_shards(read_chunks(corpus), settings.shard_rows)):
        for p in passages:
            checksum.update(p.id.encode() + b"\0" + p.contents.encode() + b"\0")
        shard = Shard(index, (count, count + len(passages)))
        shards.append(shard)
        count += len(passages)
        progress.update(len(passages))
        if index % process_count != process_index:
            continue
        if shard_done(out_dir, shard):
            mine -= 1
            continue
        if max_shards is not None and written >= max_shards:
            log.info("stopping after %d shards (max_shards)", max_shards)
            progress.close()
            return dataclasses.replace(fresh, shards=tuple(s for s in shards if shard_done(out_dir, s)))
        _write_shard(out_dir, shard, passages, embedder, policy_tokenizer, settings)
        written, mine = written + 1, mine - 1
        written_rows += len(passages)
        elapsed = time.perf_counter() - started
        log.info("shard %d (rows %d-%d) written: %.0f passages/s in this run; process %d of %d has %d shards "
                 "left, ETA %s", index, *shard.rows, written_rows / elapsed, process_index, process_count, mine,
                 _duration(elapsed / written * mine))  # fmt: skip
    progress.close()
    final = dataclasses.replace(fresh, shards=tuple(shards), count=count, corpus_sha256=checksum.hexdigest(),
                                complete=True)  # fmt: skip
    missing = [s.index for s in shards if not shard_done(out_dir, s)]
    if missing:
        log.info("process %d of %d: its shards are done; %d shards of other processes are not yet (%s...): the "
                 "process that finishes last writes the manifest", process_index, process_count, len(missing),
                 missing[:5])  # fmt: skip
        return dataclasses.replace(final, shards=tuple(s for s in shards if s.index not in missing), complete=False)
    write_id_index(out_dir, shards)
    final.write(out_dir)
    return final


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _line_count(file: str) -> int:
    with open(file, "rb") as fh:
        data = fh.read()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def style_overrides(style: str | None) -> dict[str, Any]:
    """EncoderConfig fields of a named style (None: what the checkpoint's own files say)."""
    if style is None:
        return {}
    if style not in ENCODER_STYLES:
        raise ValueError(f"encoder style {style!r}; expected one of {sorted(ENCODER_STYLES)}")
    return dict(ENCODER_STYLES[style])


def _check_or_start(out_dir: str, fresh: IndexManifest) -> None:
    """A new index directory gets the run's (incomplete) manifest; an existing one must have
    been started with the same encoders and settings (resume), else the run is refused."""
    if not IndexManifest.exists(out_dir):
        fresh.write(out_dir)
        return
    found = IndexManifest.read(out_dir)
    for key in ("encoder", "query_encoder", "style", "dtype", "settings"):
        if getattr(found, key) != getattr(fresh, key):
            raise ValueError(f"{os.path.join(out_dir, MANIFEST)}: {key}={getattr(found, key)!r} differs from this "
                             f"run's {getattr(fresh, key)!r}; use a new --out")  # fmt: skip


def _write_shard(out_dir: str, shard: Shard, passages: list[Passage], embedder: _Embedder, policy_tokenizer: Any,
                 settings: EmbedSettings) -> None:  # fmt: skip
    texts = [p.contents for p in passages]
    tokens = lengths = None
    if policy_tokenizer is not None:
        tokens, lengths = _policy_tokens(policy_tokenizer, texts, settings.passage_tokens)
    write_shard(out_dir, shard, passages, embedder(texts), tokens, lengths)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    from medr3_jax import assets  # noqa: PLC0415
    from medr3_jax.sharding import add_process_flags, initialize_from, make_mesh  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)
    p = ArgumentParser(prog="python -m medr3_jax.retrieval.embed", description=__doc__.split("\n")[0])
    p.add_argument("--corpus", nargs="+", required=True, help="chunk .jsonl files or directories")
    p.add_argument("--encoder", default="minilm", help="'minilm' (bundled) or an HF BERT directory")
    p.add_argument("--query_encoder", default=None, help="separate query encoder dir (MedCPT); default: --encoder")
    p.add_argument(
        "--style", default=None, choices=sorted(ENCODER_STYLES), help="pooling preset (default: the dir's files)"
    )
    p.add_argument("--query_max_len", type=int, default=None, help="encoder tokens per query (default: --max_len)")
    p.add_argument("--out", required=True)
    p.add_argument("--policy_tokenizer", default=None, help="HF dir or .gguf of the policy, for the passage store")
    p.add_argument("--shard_rows", type=int, default=100_000)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    p.add_argument("--passage_tokens", type=int, default=256, help="policy tokens kept per passage in the store")
    p.add_argument("--mesh", default="data=-1", help="devices that share the encoding batches (this process's)")
    add_process_flags(p)
    args = p.parse_args(argv)
    if args.coordinator_address is None and args.num_processes is not None:
        # independent processes (hosts that share only the output directory): no JAX collective
        process_index, process_count, mesh = args.process_id or 0, args.num_processes, make_mesh(args.mesh)
    else:
        initialize_from(args)
        process_index, process_count = jax.process_index(), jax.process_count()
        # each process encodes its own shards on its own chips
        mesh = (
            make_mesh(args.mesh) if process_count == 1 else jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
        )
    encoder_dir = assets.minilm_dir() if args.encoder == "minilm" else args.encoder
    policy = None
    if args.policy_tokenizer:
        from medr3_jax.models.tokenizers import load_tokenizer  # noqa: PLC0415

        policy = load_tokenizer(args.policy_tokenizer)
    settings = EmbedSettings(
        shard_rows=args.shard_rows, batch_size=args.batch_size, max_len=args.max_len, dtype=args.dtype,
        query_max_len=args.query_max_len, passage_tokens=args.passage_tokens,
    )  # fmt: skip
    manifest = embed_corpus(
        args.corpus, encoder_dir, args.out, settings=settings, policy_tokenizer=policy, mesh=mesh,
        query_encoder_dir=args.query_encoder, style=args.style, process_index=process_index,
        process_count=process_count,
    )  # fmt: skip
    print(json.dumps({"count": manifest.count, "dim": manifest.dim, "dtype": manifest.dtype, "complete": manifest.complete,
                      "corpus_sha256": manifest.corpus_sha256, "shards": len(manifest.shards)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
