"""Retrieval at corpus scale: a synthetic N-passage index written in the real on-disk format by
the project's own writer (`retrieval.store.write_shard`: random unit vectors, synthetic texts and
token rows), opened with `Retriever` for each backend in a fresh process. Prints JSON: open
seconds, resident memory after open, queries/s, `passage_tokens` latency, and an extrapolation
to MedCorp's 54M passages.

    .venv/bin/python bench/retrieval_scale.py --passages 2000000 --out bench/results/cpu_retrieval_scale_2m.json
    .venv/bin/python bench/retrieval_scale.py --passages 200000 --backends exact,bm25   # a quick look

Targets (issue 21) on the project's 2-core machine at N = 2M: open <= 20 s and resident memory
<= table bytes + 1 GiB for exact and scann. ScaNN and BM25 build their index the first time an
index directory is opened (timed as `build_s`, in its own process); `open_s` is a second open,
which loads it. The query encoder is the bundled MiniLM (384 dimensions), so queries are real
text encoded on the fly; queries/s counts encoding + search, `search_only_qps` the search alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from machine import describe  # noqa: E402  (bench/machine.py: scripts run with bench/ on sys.path)

WORDS = ("troponin myocardial infarction insulin diabetes sepsis lactate asthma corticosteroid scurvy vitamin "
         "warfarin anticoagulation pneumonia antibiotic renal failure hepatic cirrhosis anemia iron thyroid "
         "hypertension stroke seizure migraine arrhythmia atrial fibrillation heart failure diuretic potassium "
         "sodium chloride bicarbonate acidosis alkalosis fever cough dyspnea chest pain abdominal nausea vomiting "
         "diarrhea infection virus bacteria fungus vaccine immunity antibody lymphocyte neutrophil platelet "
         "coagulation bleeding surgery anesthesia trauma fracture bone joint arthritis gout lupus kidney liver "
         "lung heart brain nerve muscle skin eye ear pregnancy fetus neonate child adult elderly dose therapy "
         "trial randomized cohort outcome mortality risk factor diagnosis treatment prognosis screening").split()  # fmt: skip
QUERIES = ["troponin in myocardial infarction", "insulin resistance in type 2 diabetes", "lactate in sepsis",
           "warfarin reversal before surgery", "first-line therapy for asthma in children",
           "iron deficiency anemia in pregnancy", "atrial fibrillation anticoagulation risk",
           "hepatic cirrhosis and renal failure"]  # fmt: skip


def resident_bytes() -> int:
    with open("/proc/self/status", encoding="utf-8") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS"))


def write_index(out: str, passages: int, dim: int, shard_rows: int, token_width: int, seed: int) -> dict:
    """The synthetic index, through the project's writer; returns what it wrote."""
    import dataclasses  # noqa: PLC0415

    from medr3_jax import assets  # noqa: PLC0415
    from medr3_jax.retrieval.corpus import Passage  # noqa: PLC0415
    from medr3_jax.retrieval.embed import EmbedSettings  # noqa: PLC0415
    from medr3_jax.retrieval.store import IndexManifest, Shard, write_id_index, write_shard  # noqa: PLC0415

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    shards = []
    start = time.perf_counter()
    for index, lo in enumerate(range(0, passages, shard_rows)):
        hi = min(lo + shard_rows, passages)
        n = hi - lo
        table = rng.standard_normal((n, dim), np.float32)
        table /= np.linalg.norm(table, axis=1, keepdims=True)
        picks = words[rng.integers(0, len(words), (n, 24))]
        texts = [" ".join(row) for row in picks]
        items = [Passage(f"synth{lo + i:09d}_0", f"Title {lo + i}", "", t) for i, t in enumerate(texts)]
        tokens = rng.integers(10, 49_000, (n, token_width), dtype=np.int32)
        lengths = rng.integers(token_width // 2, token_width + 1, n).astype(np.int32)
        shard = Shard(index, (lo, hi))
        write_shard(out, shard, items, table.astype(np.float16), tokens, lengths)
        shards.append(shard)
        print(f"[scale] wrote shard {index} rows {lo}-{hi} ({time.perf_counter() - start:.0f} s)", file=sys.stderr,
              flush=True)  # fmt: skip
    write_id_index(out, shards)
    settings = dataclasses.asdict(EmbedSettings(shard_rows=shard_rows, passage_tokens=token_width))
    manifest = IndexManifest(encoder=assets.minilm_dir(), query_encoder=assets.minilm_dir(), dtype="float16",
                             settings=settings, shards=tuple(shards), dim=dim, count=passages,
                             corpus_sha256=f"synthetic-{passages}-{dim}-{seed}", complete=True)  # fmt: skip
    manifest.write(out)
    return {"write_s": time.perf_counter() - start, "shards": len(shards),
            "table_bytes": passages * dim * 2, "disk_bytes": sum(os.path.getsize(os.path.join(out, f))
                                                                 for f in os.listdir(out) if os.path.isfile(os.path.join(out, f)))}  # fmt: skip


def measure(index_dir: str, backend: str, batch: int, repeats: int) -> dict:
    """One backend in this process: open, resident memory, queries/s, passage_tokens latency."""
    import jax  # noqa: PLC0415

    from medr3_jax.retrieval.retriever import Retriever  # noqa: PLC0415

    jax.devices()  # the runtime up before the baseline
    before = resident_bytes()
    start = time.perf_counter()
    retriever = Retriever(index_dir, backend=backend)
    open_s = time.perf_counter() - start
    after_open = resident_bytes()
    queries = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(batch)]
    retriever.search(queries, 5)  # compile / warm
    start = time.perf_counter()
    for _ in range(repeats):
        retriever.search(queries, 5)
    qps = batch * repeats / (time.perf_counter() - start)
    out = {"backend": backend, "open_s": open_s, "resident_bytes_before_open": before,
           "resident_bytes_after_open": after_open, "qps": qps}  # fmt: skip
    if backend != "bm25":
        vectors = retriever.encode_queries(queries)
        retriever._dense.search(vectors, 5)
        start = time.perf_counter()
        for _ in range(repeats):
            np.asarray(retriever._dense.search(vectors, 5)[0])
        out["search_only_qps"] = batch * repeats / (time.perf_counter() - start)
    rng = np.random.default_rng(1)
    picks = [retriever.store.ids(rng.integers(0, len(retriever), 5)) for _ in range(200)]
    start = time.perf_counter()
    for ids5 in picks:
        retriever.passage_tokens(ids5)
    out["passage_tokens_ms_per_5"] = (time.perf_counter() - start) / len(picks) * 1e3
    start = time.perf_counter()
    for ids5 in picks[:50]:
        [retriever.passage(i) for i in ids5]
    out["passage_ms_per_5"] = (time.perf_counter() - start) / 50 * 1e3
    out["resident_bytes_end"] = resident_bytes()
    return out


def run_backend(index_dir: str, backend: str, batch: int, repeats: int, timeout_s: int) -> dict:
    """`measure` in a fresh process (its own resident memory); raises with its stderr tail."""
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", backend, "--dir", index_dir, "--batch", str(batch),
           "--repeats", str(repeats)]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extrapolate(result: dict, passages: int, target: int = 54_000_000) -> dict:
    """MedCorp-sized figures from the measured ones, linear in what each cost grows with: the
    table at 384 and 768 dimensions (float16); exact's open time by table bytes (it reads the
    table), its search time by rows; ScaNN's and BM25's build by rows. One host holding
    everything, i.e. an upper bound: on a pod each host reads and searches its share."""
    scale = target / passages
    out = {"passages": target, "table_bytes_f16_384": target * 384 * 2, "table_bytes_f16_768": target * 768 * 2}
    for r in result["backends"]:
        name = r["backend"]
        if name == "exact":
            per_byte = r["open_s"] / result["table_bytes"]
            out["exact_open_s_one_host_384"] = per_byte * target * 384 * 2
            out["exact_open_s_one_host_768"] = per_byte * target * 768 * 2
            out["exact_search_only_qps_one_host_384"] = r["search_only_qps"] / scale
        if "build_s" in r:
            out[f"{name}_build_s_one_host"] = r["build_s"] * scale
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--passages", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=384, help="the bundled MiniLM encodes queries: 384")
    p.add_argument("--shard_rows", type=int, default=100_000)
    p.add_argument("--token_width", type=int, default=64, help="policy tokens per passage in the store")
    p.add_argument("--backends", default="exact,scann,bm25")
    p.add_argument("--batch", type=int, default=64, help="queries per search call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", default=None, help="index directory (default: a temporary one, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the index directory")
    p.add_argument("--out", default=None)
    p.add_argument("--timeout_s", type=int, default=3600, help="per backend process")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one backend in this process
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.dir, args.measure, args.batch, args.repeats)))
        return 0
    index_dir = args.dir or tempfile.mkdtemp(prefix="medr3_scale_")
    result: dict = {"benchmark": "retrieval_scale", "passages": args.passages, "dim": args.dim, "machine": describe(),
                    "token_width": args.token_width, "batch": args.batch}  # fmt: skip
    from medr3_jax.retrieval.store import IndexManifest  # noqa: PLC0415

    if not (IndexManifest.exists(index_dir) and IndexManifest.read(index_dir).complete):
        result["write"] = write_index(index_dir, args.passages, args.dim, args.shard_rows, args.token_width, seed=0)
    table_bytes = args.passages * args.dim * 2
    result["table_bytes"] = table_bytes
    result["backends"] = []
    for backend in [b for b in args.backends.split(",") if b]:
        if backend in ("scann", "bm25"):  # the first open builds (and caches) the index
            start = time.perf_counter()
            first = run_backend(index_dir, backend, args.batch, 1, args.timeout_s)
            build = {"build_s": first["open_s"], "build_process_s": time.perf_counter() - start}
        else:
            build = {}
        r = run_backend(index_dir, backend, args.batch, args.repeats, args.timeout_s) | build
        r["meets_open_20s"] = r["open_s"] <= 20
        r["meets_memory_table_plus_1gib"] = r["resident_bytes_after_open"] <= table_bytes + 2**30
        result["backends"].append(r)
        print(f"[scale] {backend}: {json.dumps(r)}", file=sys.stderr, flush=True)
    result["extrapolated"] = extrapolate(result, args.passages)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if not args.dir and not args.keep:
        import shutil  # noqa: PLC0415

        shutil.rmtree(index_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
