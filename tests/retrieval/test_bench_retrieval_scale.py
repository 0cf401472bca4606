"""bench/retrieval_scale.py end to end on a small synthetic index: the index it writes is one the
Retriever opens (every id back to its row, the table's top-k equal to numpy's), the JSON parses,
each backend reports its open time, memory and throughput, and the machine is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.retrieval.store import IndexManifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_scale_bench_writes_a_real_index_and_reports_each_backend(tmp_path):
    index_dir = str(tmp_path / "index")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "retrieval_scale.py"), "--passages", "2500", "--shard_rows",
           "1000", "--backends", "exact,bm25", "--repeats", "1", "--batch", "8", "--dir", index_dir]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["machine"]["cores"] and report["write"]["shards"] == 3 and report["table_bytes"] == 2500 * 384 * 2
    assert [b["backend"] for b in report["backends"]] == ["exact", "bm25"]
    for b in report["backends"]:
        assert b["open_s"] > 0 and b["qps"] > 0 and b["passage_tokens_ms_per_5"] > 0
        assert b["resident_bytes_after_open"] >= b["resident_bytes_before_open"] > 0
    assert "build_s" in report["backends"][1] and report["extrapolated"]["passages"] == 54_000_000

    manifest = IndexManifest.read(index_dir)
    assert manifest.complete and manifest.count == 2500 and [s.rows for s in manifest.shards][-1] == (2000, 2500)
    retriever = Retriever(index_dir, backend="exact")
    ids = retriever.store.ids(range(2500))
    assert retriever.store.rows(ids[::-1]) == list(range(2499, -1, -1))
    table = np.concatenate([np.load(s.file(index_dir, "table")) for s in manifest.shards]).astype(np.float32)
    vectors = retriever.encode_queries(["troponin in sepsis"])
    got, _ = retriever.search(["troponin in sepsis"], 5)
    assert got[0] == [ids[r] for r in np.argsort(-(vectors @ table.T)[0], kind="stable")[:5]]
