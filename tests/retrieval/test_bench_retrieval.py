"""bench/retrieval.py end to end on a small table: the JSON on stdout parses, the exact methods
agree with numpy, ScaNN keeps its recall, every method reports a positive QPS, the machine is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("faiss", reason="faiss-cpu comes with the test and bench extras (pip install -e .[test])")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def report() -> dict:
    # IVF-PQ is skipped too: its 192 sub-quantizer trainings alone take ~30 s on 2 shared cores.
    # 100 clusters (200 rows each): with the default 1000, a 20k table has 20 rows per cluster and
    # ScaNN's k-means (multi-threaded, not deterministic) gives recall 0.88-0.94 from run to run.
    cmd = [sys.executable, os.path.join(ROOT, "bench", "retrieval.py"), "--rows", "20000", "--queries", "256"]
    cmd += ["--batch", "128", "--clusters", "100", "--skip", "encoder,faiss_ivfpq", "--ef_search", "32,64"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)  # stdout holds the JSON only (progress goes to stderr)


def _points(report: dict, method: str) -> list[dict]:
    points = [m for m in report["methods"] if m["method"] == method]
    assert points, f"no {method} points in {[m['method'] for m in report['methods']]}"
    return points


def test_exact_methods_agree_with_numpy(report):
    assert [p["recall_at_10"] for p in _points(report, "exact_jax")] == [1.0]
    assert [p["recall_at_10"] for p in _points(report, "faiss_flat")] == [1.0]


def test_scann_default_recall(report):
    (default,) = [p for p in _points(report, "scann") if p["params"]["default_config"]]
    assert not default["params"]["brute_force"]  # 20k rows: the tree + AH path, not brute force
    assert default["recall_at_10"] >= 0.9, default


def test_every_method_has_positive_qps_and_latency(report):
    assert {m["method"] for m in report["methods"]} == {
        "exact_jax",
        "faiss_flat",
        "scann",
        "faiss_hnsw",
    }
    for m in report["methods"]:
        assert m["qps"] > 0 and m["batch_latency_ms"]["p50"] > 0, m
        assert 0.0 <= m["recall_at_10"] <= 1.0
    assert [p["params"]["efSearch"] for p in _points(report, "faiss_hnsw")][:2] == [32, 64]
    assert set(report["skipped"]) == {"encoder", "faiss_ivfpq"}


def test_report_names_the_machine_and_the_data(report):
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["machine"] and machine["jax_backend"]
    assert machine["faiss_omp_threads"] == os.cpu_count()
    assert machine["faiss-cpu"] and machine["scann"]
    data = report["data"]
    assert (data["rows"], data["dim"], data["queries"], data["batch"]) == (20000, 384, 256, 128)
    assert "seed" in data["generator"] and data["batches_timed"] == 2
    summary = report["summary"]
    assert "scann_vs_faiss_hnsw_qps_at_recall_0.95" in summary and summary["target"] == 1.5
