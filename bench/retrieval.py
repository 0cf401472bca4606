"""Retrieval benchmark: QPS and recall@10 of our exact (JAX) and ScaNN backends against faiss-cpu
(IndexFlatIP, IndexHNSWFlat, IVF-PQ) on one seeded clustered table, plus query-encoder
throughput (our jitted Flax MiniLM vs transformers' BertModel on torch CPU). Prints JSON.

    .venv/bin/python bench/retrieval.py > /tmp/bench_retrieval.json        # 1M x 384, 2048 queries
    .venv/bin/python bench/retrieval.py --rows 20000 --queries 256 --batch 128 --skip encoder

Every method searches the same queries in `--batch`-sized batches; one warm-up batch (compile,
caches) is excluded, then every batch is timed. QPS = queries / total search time. Recall@10 is
against exact top-10 by inner product computed with numpy (float32, blocks of rows). faiss runs
with faiss.omp_set_num_threads(os.cpu_count()). Progress goes to stderr, the JSON to stdout.

faiss baselines, as the papers' code builds them: Search-R1 serves a faiss "Flat" inner-product
index (IndexFlatIP) by default and publishes an "HNSW64" variant; MedRAG builds IndexFlatIP, or
with HNSW=True `IndexHNSWFlat(dim, M=32)` with METRIC_INNER_PRODUCT and faiss's default
efConstruction (40). We use MedRAG's HNSW (M=32, efConstruction=40; flags change both) and sweep
efSearch (doubling past the list until one point reaches recall 0.95). On this data that graph is
weak (recall 0.95 only near efSearch 4096 at 1M rows); `--hnsw_ef_construction 200` builds a far
stronger one (recall 0.98 at efSearch 32) in about twice the time: report both when comparing. IVF-PQ is faiss's nearest analogue of our ScaNN configuration: the same number of
coarse lists, 4-bit fast-scan PQ with 2 dimensions per sub-quantizer, exact re-ranking of
10 x k candidates, trained on the same 250k-row sample size.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

K = 10
RECALL_TARGET = 0.95
METHODS = ("exact", "scann", "faiss_flat", "faiss_hnsw", "faiss_ivfpq", "encoder")
GT_BLOCK_ROWS = 32_768

# Search-engine style medical queries (what a policy emits inside <search>): 20-90 bytes each.
MEDICAL_QUERIES = [
    "first-line treatment for community-acquired pneumonia in adults",
    "troponin elevation in myocardial infarction",
    "causes of microcytic anemia",
    "metformin contraindications renal failure",
    "signs of diabetic ketoacidosis",
    "warfarin reversal vitamin K",
    "Kawasaki disease diagnostic criteria",
    "treatment of acute gout flare",
    "symptoms of hypothyroidism in elderly patients",
    "mechanism of action of beta blockers",
    "BRCA1 mutation breast cancer risk",
    "management of anaphylaxis epinephrine dose",
    "scurvy vitamin C deficiency",
    "tension pneumothorax emergency management",
    "HbA1c target type 2 diabetes",
    "side effects of lithium therapy",
    "pathophysiology of nephrotic syndrome",
    "preeclampsia magnesium sulfate",
    "CURB-65 score",
    "tuberculosis treatment regimen isoniazid rifampin",
    "Guillain-Barre syndrome after Campylobacter infection",
    "hyperkalemia ECG changes",
    "acute pancreatitis causes alcohol gallstones",
    "SGLT2 inhibitors heart failure outcomes",
]

_START = time.perf_counter()


def log(message: str) -> None:
    print(f"[retrieval bench {time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---- data ------------------------------------------------------------------------------------
def clustered_table(rows: int, dim: int, clusters: int, spread: float, seed: int, chunk: int = 65_536):
    """Unit rows: normalise(centre[c] + spread * g / sqrt(dim)), c uniform over `clusters` unit
    centres, g ~ N(0, I); float32, generated in chunks (no float64 copy of the table)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    table = np.empty((rows, dim), np.float32)
    for lo in range(0, rows, chunk):
        n = min(chunk, rows - lo)
        x = centres[rng.integers(0, clusters, n)] + (spread / math.sqrt(dim)) * rng.standard_normal(
            (n, dim), dtype=np.float32
        )
        table[lo : lo + n] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return table, centres


def queries_near_centres(centres: np.ndarray, n: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    q = centres[rng.integers(0, len(centres), n)] + (spread / math.sqrt(dim)) * rng.standard_normal(
        (n, dim), dtype=np.float32
    )
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def real_texts(n: int, seed: int) -> tuple[list[str], str]:
    """`n` real English paragraphs: the bundled sample corpus's passages, then the docstring
    paragraphs (80-1200 characters, deduplicated) of the Python packages installed beside
    numpy, in sorted file order, seeded-shuffled; and a line saying where they came from."""
    import ast  # noqa: PLC0415
    import glob  # noqa: PLC0415

    from medr3_jax import assets  # noqa: PLC0415
    from medr3_jax.retrieval.corpus import read_chunks  # noqa: PLC0415

    texts = [p.contents for p in read_chunks([assets.sample_corpus_dir()])]
    seen = set(texts)
    site = os.path.dirname(os.path.dirname(np.__file__))
    for path in sorted(glob.glob(os.path.join(site, "**", "*.py"), recursive=True)):
        if len(texts) >= 3 * n:
            break
        try:
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for para in (ast.get_docstring(node) or "").split("\n\n"):
                    para = " ".join(para.split())
                    if 80 <= len(para) <= 1200 and para not in seen:
                        seen.add(para)
                        texts.append(para)
    if len(texts) < n:
        raise SystemExit(f"--data real_text: only {len(texts)} paragraphs found under {site}; ask for fewer --rows")
    sample, rest = texts[:302], texts[302:]
    rng = np.random.default_rng(seed)
    rest = [rest[i] for i in rng.permutation(len(rest))]
    origin = (f"the 302 bundled MedRAG sample passages + docstring paragraphs (80-1200 chars, deduplicated) of the "
              f"packages in {site}, seed {seed} shuffle")  # fmt: skip
    return (sample + rest)[:n], origin


def embed_texts(texts: list[str], max_len: int = 128, batch: int = 256) -> np.ndarray:
    """The bundled MiniLM's embeddings of `texts` (as retrieval.embed encodes passages), float32."""
    from flax import nnx  # noqa: PLC0415

    from medr3_jax import assets  # noqa: PLC0415
    from medr3_jax.models.encoder import encoder_inputs, load_encoder, load_encoder_tokenizer  # noqa: PLC0415

    encoder, tokenizer = load_encoder(assets.minilm_dir()), load_encoder_tokenizer(assets.minilm_dir())
    embed = nnx.jit(lambda model, tokens, mask: model.embed(tokens, mask))
    out = []
    for lo in range(0, len(texts), batch):
        chunk = texts[lo : lo + batch]
        tokens, mask = encoder_inputs(tokenizer, chunk + [""] * (batch - len(chunk)), max_len=max_len)
        out.append(np.asarray(embed(encoder, tokens, mask), np.float32)[: len(chunk)])
        if lo // batch % 20 == 0:
            log(f"embedded {lo + len(chunk)} / {len(texts)} texts")
    return np.concatenate(out)


def ground_truth(table: np.ndarray, queries: np.ndarray, k: int, block: int = GT_BLOCK_ROWS) -> np.ndarray:
    """Exact top-k row ids [Q,k] by inner product: float32 numpy matmul over blocks of rows,
    a per-block argpartition, then one sort of the candidates (ties broken by lower row id)."""
    cand_s, cand_i = [], []
    for lo in range(0, len(table), block):
        scores = queries @ table[lo : lo + block].T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        cand_s.append(np.take_along_axis(scores, part, axis=1))
        cand_i.append(part + lo)
    s, i = np.concatenate(cand_s, 1), np.concatenate(cand_i, 1)
    order = np.lexsort((i, -s), axis=1)[:, :k]
    return np.take_along_axis(i, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


# ---- timing ----------------------------------------------------------------------------------
def run_batches(search: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """One warm-up batch (not timed), then every batch timed on its own. search -> ids [B,k]."""
    search(batches[0])
    ids, times = [], []
    for b in batches:
        start = time.perf_counter()
        out = np.asarray(search(b))
        times.append(time.perf_counter() - start)
        ids.append(out)
    return np.concatenate(ids), times


def point(name: str, params: dict, ids: np.ndarray, times: list[float], truth: np.ndarray, **extra) -> dict:
    ms = np.asarray(times) * 1e3
    row = {
        "method": name,
        "params": params,
        "recall_at_10": recall(ids, truth),
        "qps": len(truth) / sum(times),
        "batch_latency_ms": {
            "mean": float(ms.mean()),
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
        },
    } | extra
    log(f"{name} {params}: recall@10 {row['recall_at_10']:.4f}, {row['qps']:.0f} QPS")
    return row


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ---- methods ---------------------------------------------------------------------------------
def bench_exact(table, batches, truth, args) -> list[dict]:
    import jax  # noqa: PLC0415

    from medr3_jax.retrieval.exact import ExactIndex  # noqa: PLC0415
    from medr3_jax.sharding import make_mesh  # noqa: PLC0415

    start = time.perf_counter()
    index = ExactIndex.build(table, make_mesh("data=-1"))  # as Retriever(backend="exact") builds it
    jax.block_until_ready(index.table)
    build = time.perf_counter() - start
    ids, times = run_batches(lambda q: index.search(q, K)[0], batches)
    params = {
        "block_rows": index.block_rows,
        "devices": int(index.mesh.devices.size),
        "dtype": str(index.table.dtype),
        "code": "medr3_jax.retrieval.exact.ExactIndex.search (Retriever backend='exact')",
    }
    return [point("exact_jax", params, ids, times, truth, build_s=build, index_bytes=int(index.table.nbytes))]


def bench_scann(table, batches, truth, args) -> list[dict]:
    from medr3_jax.retrieval.scann_index import ScannIndex  # noqa: PLC0415

    log("scann: building with the defaults (ScannConfig.sized_for, leaves calibrated on the table)")
    start = time.perf_counter()
    index = ScannIndex.build(table, k_hint=K)
    build = time.perf_counter() - start
    tmp = tempfile.mkdtemp(prefix="bench_scann_")
    try:
        index.save(tmp)
        nbytes = dir_bytes(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config = index.config
    log(f"scann: built in {build:.1f}s, {config}")
    common = {
        "num_leaves": config.num_leaves,
        "reorder": config.reorder,
        "brute_force": config.brute_force,
        "training_sample_size": min(len(table), 250_000),
        "score": "score_ah(2 dims/block, anisotropic_quantization_threshold=0.2)",
    }
    default = config.leaves_to_search
    leaves = sorted({max(default // 4, 1), max(default // 2, 1), default}) if not config.brute_force else [0]
    rows: list[dict] = []

    def measure(n_leaves: int, reorder: int = config.reorder) -> None:
        cfg = dataclasses.replace(config, leaves_to_search=n_leaves, reorder=reorder)
        sub = ScannIndex(index.searcher, cfg, index.num_rows, index.row_offset, rows=index.rows)  # same searcher
        params = common | {"leaves_to_search": n_leaves, "reorder": reorder, "default_config": cfg == config}
        ids, times = run_batches(lambda q: sub.search(q, K)[0], batches)
        rows.append(
            point("scann", params, ids, times, truth, build_s=build, index_bytes=nbytes,
                  code="ScannIndex.search (search_batched_parallel, one sub-batch per core; exact f32 re-scoring)")
        )  # fmt: skip

    for n in leaves:
        measure(n)
    n = default
    while not config.brute_force and rows_recall(rows, "scann", n) < RECALL_TARGET and n < config.num_leaves:
        n = min(2 * n, config.num_leaves)  # more leaves until the default recall target is met
        measure(n)
    if not config.brute_force:  # is recall capped by re-ranking? (the fewest leaves, 2x and 4x reorder)
        for factor in (2, 4):
            measure(leaves[0], factor * config.reorder)
    return rows


def rows_recall(rows: list[dict], method: str, leaves: int) -> float:
    return max(r["recall_at_10"] for r in rows if r["method"] == method and r["params"]["leaves_to_search"] == leaves)


def _faiss():
    import faiss  # noqa: PLC0415

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return faiss


def bench_faiss_flat(table, batches, truth, args) -> list[dict]:
    faiss = _faiss()
    start = time.perf_counter()
    index = faiss.IndexFlatIP(table.shape[1])
    index.add(table)
    build = time.perf_counter() - start
    ids, times = run_batches(lambda q: index.search(q, K)[1], batches)
    return [point("faiss_flat", {"index": "IndexFlatIP"}, ids, times, truth, build_s=build, index_bytes=table.nbytes)]


def bench_faiss_hnsw(table, batches, truth, args) -> list[dict]:
    faiss = _faiss()
    d = table.shape[1]
    index = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.hnsw_ef_construction
    chunk = max(len(table) // 20, 10_000)
    start = time.perf_counter()
    for lo in range(0, len(table), chunk):
        index.add(table[lo : lo + chunk])
        log(f"faiss_hnsw: added {min(lo + chunk, len(table))}/{len(table)} rows, {time.perf_counter() - start:.0f}s")
    build = time.perf_counter() - start
    hnsw = index.hnsw
    nbytes = int(
        table.nbytes + hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
    )  # vectors + graph links + per-node offsets and levels
    rows = []
    efs = list(args.ef_search)
    while efs:
        ef = efs.pop(0)
        hnsw.efSearch = ef
        ids, times = run_batches(lambda q: index.search(q, K)[1], batches)
        params = {"index": "IndexHNSWFlat", "M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction}
        rows.append(
            point("faiss_hnsw", params | {"efSearch": ef}, ids, times, truth, build_s=build, index_bytes=nbytes)
        )
        if not efs and max(r["recall_at_10"] for r in rows) < RECALL_TARGET and ef < 4096:
            efs.append(2 * ef)  # extend the sweep until one point reaches the recall target
    return rows


def bench_faiss_ivfpq(table, batches, truth, args) -> list[dict]:
    from medr3_jax.retrieval.scann_index import ScannConfig  # noqa: PLC0415

    faiss = _faiss()
    n, d = table.shape
    sized = ScannConfig.sized_for(n, K)
    nlist = sized.num_leaves or max(int(2 * math.sqrt(n)), 1)
    spec = f"IVF{nlist},PQ{d // 2}x4fs,RFlat"
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    sample = table[np.sort(np.random.default_rng(0).choice(n, min(n, 250_000), replace=False))]
    log(f"faiss_ivfpq: training {spec} on {len(sample)} rows")
    start = time.perf_counter()
    index.train(sample)
    del sample
    index.add(table)
    build = time.perf_counter() - start
    ivf = faiss.extract_index_ivf(index)
    index.k_factor = max(sized.reorder, 10 * K) // K  # re-rank as many candidates as ScaNN reorders
    nbytes = int(table.nbytes + ivf.ntotal * ivf.code_size + ivf.ntotal * 8 + nlist * d * 4)  # approx.
    rows = []
    probes = sorted({max(nlist // f, 1) for f in (32, 16, 8, 4)})
    for nprobe in probes:
        ivf.nprobe = nprobe
        ids, times = run_batches(lambda q: index.search(q, K)[1], batches)
        params = {"index": spec, "nprobe": nprobe, "k_factor": index.k_factor, "train_rows": min(n, 250_000)}
        rows.append(point("faiss_ivfpq", params, ids, times, truth, build_s=build, index_bytes=nbytes))
    return rows


def bench_encoder(args) -> dict:
    import jax  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from medr3_jax import assets  # noqa: PLC0415
    from medr3_jax.models.encoder import encoder_inputs, load_encoder, load_encoder_tokenizer  # noqa: PLC0415
    from medr3_jax.retrieval.retriever import QUERY_BUCKETS  # noqa: PLC0415

    folder = assets.minilm_dir()
    texts = [MEDICAL_QUERIES[i % len(MEDICAL_QUERIES)] for i in range(args.batch)]
    encoder, tokenizer = load_encoder(folder), load_encoder_tokenizer(folder)
    start = time.perf_counter()
    tokens, mask = encoder_inputs(tokenizer, texts, max_len=args.encoder_max_len)
    tokenize_s = time.perf_counter() - start
    embed = nnx.jit(lambda model, t, m: model.embed(t, m))  # as Retriever.encode_queries

    def best(fn) -> tuple[float, Any]:
        out = fn()  # warm-up: compile / allocator
        times = []
        for _ in range(args.encoder_repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times)), out

    torch.set_num_threads(os.cpu_count() or 1)
    hf = transformers.BertModel.from_pretrained(folder, dtype=torch.float32).eval()

    def theirs(t, m):
        ids_t, mask_t = torch.from_numpy(t.astype(np.int64)), torch.from_numpy(m.astype(np.int64))
        with torch.inference_mode():
            hidden = hf(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            w = mask_t.unsqueeze(-1).float()
            pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    def pair(t, m) -> dict:
        """ours (jitted Flax MiniLM) and transformers (torch CPU) on the same padded batch."""
        ours_s, ours_vec = best(lambda: jax.block_until_ready(embed(encoder, t, m)))
        hf_s, hf_vec = best(lambda: theirs(t, m))
        return {"width": int(t.shape[1]), "ours_batch_s": ours_s, "ours_queries_per_s": args.batch / ours_s,
                "hf_torch_batch_s": hf_s, "hf_torch_queries_per_s": args.batch / hf_s, "speedup_vs_hf_torch": hf_s / ours_s,
                "max_abs_diff_vs_hf": float(np.abs(np.asarray(ours_vec) - hf_vec.numpy()).max())}  # fmt: skip

    log("encoder: ours vs transformers, padded as Retriever.encode_queries pads (length buckets)")
    bucketed = pair(*encoder_inputs(tokenizer, texts, max_len=args.encoder_max_len, buckets=QUERY_BUCKETS))
    log(f"encoder: ours vs transformers, padded to max_len {args.encoder_max_len}")
    fixed = pair(tokens, mask)
    lengths = mask.sum(1)
    return {
        "model": "all-MiniLM-L6-v2 (bundled), mean pooling + L2 normalisation, float32",
        "batch": args.batch,
        "max_len": args.encoder_max_len,
        "query_bytes_mean": float(np.mean([len(t.encode()) for t in texts])),
        "query_tokens_mean": float(lengths.mean()),
        "query_tokens_max": int(lengths.max()),
        "repeats": args.encoder_repeats,
        "tokenize_s": tokenize_s,
        "retriever_padding": bucketed | {"buckets": list(QUERY_BUCKETS)},
        "fixed_max_len": fixed,
        "torch_threads": torch.get_num_threads(),
    }


def scann_vs_hnsw(rows: list[dict], scann_method: str, best: bool = False) -> dict:
    """QPS of ScaNN over the fastest HNSW point with recall >= target. The ScaNN point: the default
    config, or the first sweep point past it that reaches the target; with `best`, the fastest
    sweep point that reaches it."""
    hnsw = [r for r in rows if r["method"] == "faiss_hnsw" and r["recall_at_10"] >= RECALL_TARGET]
    scann = [r for r in rows if r["method"] == scann_method]
    default = [r for r in scann if r["params"].get("default_config")]
    chosen = None
    if best:
        good = [r for r in scann if r["recall_at_10"] >= RECALL_TARGET]
        chosen = max(good, key=lambda r: r["qps"]) if good else None
    elif default and default[0]["recall_at_10"] >= RECALL_TARGET:
        chosen = default[0]
    else:
        lo = default[0]["params"]["leaves_to_search"] if default else 0
        more = [r for r in scann if r["params"]["leaves_to_search"] > lo and r["recall_at_10"] >= RECALL_TARGET]
        chosen = min(more, key=lambda r: r["params"]["leaves_to_search"]) if more else None
    fastest = max(hnsw, key=lambda r: r["qps"]) if hnsw else None
    keep = ("method", "params", "recall_at_10", "qps")
    return {
        "ratio": chosen["qps"] / fastest["qps"] if chosen and fastest else None,
        "scann_point": {k: chosen[k] for k in keep} if chosen else None,
        "hnsw_point": {k: fastest[k] for k in keep} if fastest else None,
    }


def machine(faiss_threads: int | None) -> dict:
    import jax  # noqa: PLC0415

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device_kind": jax.devices()[0].device_kind,
        "jax_device_count": jax.device_count(),
        "faiss_omp_threads": faiss_threads,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
        with open("/proc/meminfo", encoding="utf-8") as fh:
            info["mem_total_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    from importlib import metadata  # noqa: PLC0415

    for package in ("faiss-cpu", "scann", "torch", "transformers", "flax"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    return info


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data",
        choices=("clustered", "real_text"),
        default="clustered",
        help="clustered: the seeded synthetic table; real_text: MiniLM embeddings of real paragraphs",
    )
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=1_000)
    p.add_argument("--spread", type=float, default=1.0, help="row noise norm relative to the unit centre")
    p.add_argument("--query_spread", type=float, default=0.5, help="query noise norm relative to the centre")
    p.add_argument("--queries", type=int, default=2048)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help=f"comma list of methods to skip: {','.join(METHODS)}")
    p.add_argument("--hnsw_m", type=int, default=32)
    p.add_argument("--hnsw_ef_construction", type=int, default=40)
    p.add_argument("--ef_search", default="32,64,128,256", help="efSearch sweep (extended if none reaches 0.95)")
    p.add_argument("--encoder_max_len", type=int, default=64)
    p.add_argument("--encoder_repeats", type=int, default=3)
    args = p.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    if unknown := args.skip - set(METHODS):
        p.error(f"--skip {sorted(unknown)}: unknown; methods are {','.join(METHODS)}")
    if args.queries % args.batch:
        p.error(f"--queries {args.queries} is not a multiple of --batch {args.batch}")
    args.ef_search = [int(e) for e in args.ef_search.split(",")]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.data == "real_text":  # real text: the table's rows and the (held-out) queries are paragraphs
        texts, origin = real_texts(args.rows + args.queries, args.seed)
        log(f"embedding {len(texts)} real paragraphs with MiniLM")
        vectors = embed_texts(texts)
        table, queries = vectors[: args.rows], vectors[args.rows :]
        generator = f"{origin}; rows: the first {args.rows} embedded with the bundled MiniLM (max_len 128), " \
                    f"queries: the next {args.queries} (held out, not table rows)"  # fmt: skip
        args.dim = table.shape[1]
    else:
        log(f"generating {args.rows} x {args.dim} rows in {args.clusters} clusters")
        table, centres = clustered_table(args.rows, args.dim, args.clusters, args.spread, args.seed)
        queries = queries_near_centres(centres, args.queries, args.query_spread, args.seed + 1)
        generator = (
            f"seed {args.seed}: {args.clusters} unit centres ~ normalise(N(0, I)); each row = normalise(centre[c] "
            f"+ {args.spread} * N(0, I) / sqrt(dim)), c uniform; queries (seed {args.seed + 1}) = "
            f"normalise(centre[c] + {args.query_spread} * N(0, I) / sqrt(dim))"
        )
    gen_s = time.perf_counter() - start
    start = time.perf_counter()
    truth = ground_truth(table, queries, K)
    gt_s = time.perf_counter() - start
    log(f"ground truth in {gt_s:.1f}s")
    batches = [queries[i : i + args.batch] for i in range(0, len(queries), args.batch)]
    top1 = np.einsum("qd,qd->q", queries, table[truth[:, 0]])
    top10 = np.einsum("qd,qd->q", queries, table[truth[:, -1]])
    result: dict[str, Any] = {
        "data": {
            "rows": args.rows,
            "dim": args.dim,
            "dtype": "float32",
            "source": args.data,
            "generator": generator,
            "clusters": args.clusters,
            "spread": args.spread,
            "query_spread": args.query_spread,
            "queries": args.queries,
            "batch": args.batch,
            "batches_timed": len(batches),
            "warmup": "one batch (batch 0) before timing, excluded",
            "generate_s": gen_s,
            "mean_top1_score": float(top1.mean()),
            "mean_top10_score": float(top10.mean()),
        },
        "ground_truth": {
            "method": f"numpy float32 queries @ table.T in blocks of {GT_BLOCK_ROWS} rows, exact top-{K} by inner product",
            "seconds": gt_s,
        },
        "methods": [],
        "skipped": {},
    }
    faiss_threads = None
    benches = {
        "exact": bench_exact,
        "faiss_flat": bench_faiss_flat,
        "scann": bench_scann,
        "faiss_hnsw": bench_faiss_hnsw,
        "faiss_ivfpq": bench_faiss_ivfpq,
    }
    for name, fn in benches.items():
        if name in args.skip:
            result["skipped"][name] = "--skip"
            continue
        if name.startswith("faiss"):
            try:
                faiss_threads = _faiss().omp_get_max_threads()
            except ImportError as err:
                result["skipped"][name] = f"faiss not importable ({err}); pip install faiss-cpu"
                continue
        log(f"{name}: start")
        result["methods"] += fn(table, batches, truth, args)
        gc.collect()
    del table
    gc.collect()
    if "encoder" in args.skip:
        result["skipped"]["encoder"] = "--skip"
    else:
        result["query_encoder"] = bench_encoder(args)
    summary = {"target": 1.5, "recall_target": RECALL_TARGET}
    # The headline ratio is our backend as shipped (ScannIndex.search, ScannConfig.sized_for);
    # the other: the fastest swept leaves_to_search.
    for key, method, best in (("scann_vs_faiss_hnsw_qps_at_recall_0.95", "scann", False),
                              ("scann_best_leaves_vs_faiss_hnsw_qps_at_recall_0.95", "scann", True)):  # fmt: skip
        detail = scann_vs_hnsw(result["methods"], method, best)
        summary[key] = detail["ratio"]
        summary[key + "_detail"] = detail
    ratio = summary["scann_vs_faiss_hnsw_qps_at_recall_0.95"]
    summary["target_met"] = ratio is not None and ratio >= 1.5
    result["summary"] = summary
    result["machine"] = machine(faiss_threads) | {"faiss_threads_note": "faiss.omp_set_num_threads(os.cpu_count())"}
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
