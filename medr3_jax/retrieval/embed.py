"""`python -m medr3_jax.retrieval.embed`: corpus -> embedding table shards + manifest + passage store.

    python -m medr3_jax.retrieval.embed --corpus corpus/textbooks/chunk corpus/pubmed/chunk \
        --encoder minilm --out index/medcorp --policy_tokenizer /ckpt/Qwen2.5-7B

Writes, per shard of `--shard_rows` passages: `table_XXXXX.npy` ([rows, D], float16 or
bfloat16), `passages_XXXXX.jsonl` (id, title, contents) and, with a policy tokenizer,
`tokens_XXXXX.npy` ([rows, passage_tokens] int32, pad-filled) + `lengths_XXXXX.npy`, so the
rollout never re-tokenises. `manifest.json` lists the shards with their row ranges, the
encoder, dim, dtype, count and a corpus checksum. Each shard is written atomically and
recorded in the manifest as it completes: an interrupted run resumes at the first missing
shard and gives byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import sys
from typing import Any, Iterator, Sequence

import jax
import ml_dtypes
import numpy as np
import tqdm
from flax import nnx
from jax.sharding import NamedSharding

from medr3_jax.models.encoder import ENCODER_STYLES, BertEncoder, encoder_inputs, load_encoder, load_encoder_tokenizer
from medr3_jax.protocol import scrub_passage
from medr3_jax.retrieval.corpus import Passage, chunk_files, read_chunks

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


def _atomic_save(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


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
) -> dict[str, Any]:
    """Embeds every passage; returns the manifest. `max_shards` stops early (a partial run).

    query_encoder_dir: a separate query encoder (MedCPT's Query-Encoder beside its
    Article-Encoder), recorded in the manifest for the Retriever; default: `encoder_dir`.
    style: a preset of `ENCODER_STYLES` (pooling, normalisation, prefixes) applied to both
    encoders, for checkpoints without sentence-transformers files (MedCPT, BGE, e5).
    """
    os.makedirs(out_dir, exist_ok=True)
    encoder = load_encoder(encoder_dir, **style_overrides(style))
    tokenizer = load_encoder_tokenizer(encoder_dir)
    embedder = _Embedder(encoder, tokenizer, settings, mesh)
    manifest_file = os.path.join(out_dir, "manifest.json")
    manifest = _load_manifest(manifest_file, encoder_dir, settings, query_encoder_dir or encoder_dir, style)
    done = {s["index"] for s in manifest["shards"]}
    checksum, count = hashlib.sha256(), 0
    total = sum(_line_count(f) for f in chunk_files(corpus))
    progress = tqdm.tqdm(total=total, unit="passages", desc="embed", disable=None)
    for index, shard in enumerate(_shards(read_chunks(corpus), settings.shard_rows)):
        for p in shard:
            checksum.update(p.id.encode() + b"\0" + p.contents.encode() + b"\0")
        rows = (count, count + len(shard))
        count += len(shard)
        if index in done:
            progress.update(len(shard))
            continue
        if max_shards is not None and len(manifest["shards"]) >= max_shards:
            log.info("stopping after %d shards (max_shards)", max_shards)
            return manifest
        _write_shard(out_dir, index, shard, embedder, policy_tokenizer, settings)
        manifest["shards"].append({"index": index, "table": f"table_{index:05d}.npy", "rows": list(rows)})
        manifest["dim"] = encoder.config.hidden_size
        _atomic_save(manifest_file, lambda fh: fh.write(json.dumps(manifest, indent=1).encode()))
        progress.update(len(shard))
    progress.close()
    manifest |= {"count": count, "corpus_sha256": checksum.hexdigest(), "complete": True}
    _atomic_save(manifest_file, lambda fh: fh.write(json.dumps(manifest, indent=1).encode()))
    return manifest


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


def _load_manifest(
    file: str, encoder_dir: str, settings: EmbedSettings, query_encoder_dir: str, style: str | None
) -> dict[str, Any]:
    fresh = {
        "encoder": os.path.abspath(encoder_dir),
        "query_encoder": os.path.abspath(query_encoder_dir),
        "style": style,
        "dtype": settings.dtype,
        "settings": dataclasses.asdict(settings),
        "shards": [],
    }
    if not os.path.exists(file):
        return fresh
    with open(file, encoding="utf-8") as fh:
        manifest = json.load(fh)
    # Manifests written before a key existed hold that key's default (same encoder, no style).
    manifest.setdefault("query_encoder", manifest.get("encoder"))
    manifest.setdefault("style", None)
    manifest.get("settings", {}).setdefault("query_max_len", None)
    for key in ("encoder", "query_encoder", "style", "dtype", "settings"):
        if manifest.get(key) != fresh[key]:
            raise ValueError(
                f"{file}: {key}={manifest.get(key)!r} differs from this run's {fresh[key]!r}; use a new --out"
            )
    return manifest


def _write_shard(
    out_dir: str, index: int, shard: list[Passage], embedder: _Embedder, policy_tokenizer: Any, settings: EmbedSettings
) -> None:
    texts = [p.contents for p in shard]
    base = lambda name: os.path.join(out_dir, f"{name}_{index:05d}")  # noqa: E731
    if policy_tokenizer is not None:
        tokens, lengths = _policy_tokens(policy_tokenizer, texts, settings.passage_tokens)
        _atomic_save(base("tokens") + ".npy", lambda fh: np.save(fh, tokens))
        _atomic_save(base("lengths") + ".npy", lambda fh: np.save(fh, lengths))
    lines = "\n".join(json.dumps({"id": p.id, "title": p.title, "contents": p.contents}) for p in shard)
    _atomic_save(base("passages") + ".jsonl", lambda fh: fh.write(lines.encode()))
    table = embedder(texts)
    _atomic_save(base("table") + ".npy", lambda fh: np.save(fh, table))  # last: marks the shard


def main(argv: Sequence[str] | None = None) -> int:
    from medr3_jax import assets  # noqa: PLC0415
    from medr3_jax.sharding import make_mesh  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(prog="python -m medr3_jax.retrieval.embed", description=__doc__.split("\n")[0])
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
    p.add_argument("--mesh", default="data=-1", help="devices that share the encoding batches")
    args = p.parse_args(argv)
    encoder_dir = assets.minilm_dir() if args.encoder == "minilm" else args.encoder
    policy = None
    if args.policy_tokenizer:
        from medr3_jax.models.tokenizers import load_tokenizer  # noqa: PLC0415

        policy = load_tokenizer(args.policy_tokenizer)
    settings = EmbedSettings(
        shard_rows=args.shard_rows, batch_size=args.batch_size, max_len=args.max_len, dtype=args.dtype,
        query_max_len=args.query_max_len,
    )  # fmt: skip
    manifest = embed_corpus(
        args.corpus, encoder_dir, args.out, settings=settings, policy_tokenizer=policy, mesh=make_mesh(args.mesh),
        query_encoder_dir=args.query_encoder, style=args.style,
    )  # fmt: skip
    print(
        json.dumps(
            {k: manifest[k] for k in ("count", "dim", "dtype", "corpus_sha256")} | {"shards": len(manifest["shards"])}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
