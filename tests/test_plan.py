"""The memory planner: per-device bytes from shapes alone, checked against arithmetic written out
from LLaMA-3.1-8B's architecture, and the CLI on the shipped gin files (no weights anywhere)."""

import json
import os
import subprocess
import sys

from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from medr3_jax import plan
from medr3_jax.sharding.rules import fit_spec

GIN_DIR = os.path.join(os.path.dirname(__file__), "..", "gin")
STAGE3, PAPER = os.path.join(GIN_DIR, "stage3.gin"), os.path.join(GIN_DIR, "scale", "paper.gin")
LLAMA_GIN = os.path.join(GIN_DIR, "models", "llama3_1_8b_instruct.gin")
GiB = 2**30

# LLaMA-3.1-8B (its HF config.json): vocabulary, hidden, FFN, layers, heads, kv heads, head dim;
# untied embeddings, parameters in bfloat16.
V, D, F, L, N, K, H = 128256, 4096, 14336, 32, 32, 8, 128
BF16 = 2
# paper.gin on stage3.gin: 32 prompts x G=16 rows; the cache holds the sampler's bucket of the
# longest prompt (2048, the largest Experiment.prompt_buckets entry) + 14336 response tokens + 1,
# rounded up to a multiple of 128.
PAPER_ROWS = 32 * 16
PAPER_SLOTS = -(-(2048 + 14336 + 1) // 128) * 128


def llama_param_bytes(fsdp: int, tensor: int, kv_tensor: int | None = None) -> int:
    """Largest per-device shard of every parameter: D split over fsdp; V, N, F (and K over
    kv_tensor, default tensor) over tensor; norms replicated (DECODER_RULES)."""
    kv_tensor = tensor if kv_tensor is None else kv_tensor
    embedding = (V // tensor) * (D // fsdp)
    lm_head = (D // fsdp) * (V // tensor)
    q_proj = L * (D // fsdp) * (N // tensor) * H
    k_proj = v_proj = L * (D // fsdp) * (K // kv_tensor) * H
    o_proj = L * (N // tensor) * H * (D // fsdp)
    gate_proj = up_proj = L * (D // fsdp) * (F // tensor)
    down_proj = L * (F // tensor) * (D // fsdp)
    norms = L * D + L * D + D  # attn_norm, mlp_norm per layer + final_norm
    return BF16 * (embedding + lm_head + q_proj + k_proj + v_proj + o_proj + gate_proj + up_proj + down_proj + norms)


def kv_cache_bytes(rows_per_device: int, slots: int, kv_heads_per_device: int) -> int:
    """k + v [L, rows, slots, K, H] bf16, valid [rows, slots] bool, length [rows] int32."""
    return (
        2 * BF16 * L * rows_per_device * slots * kv_heads_per_device * H + rows_per_device * slots + 4 * rows_per_device
    )


def run_json(capsys, *argv: str) -> dict:
    assert plan.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["stages"][0]


def test_the_hand_count_is_llamas_8b():
    assert llama_param_bytes(1, 1) == BF16 * 8_030_261_248


def test_llama_per_device_bytes_on_two_meshes(capsys):
    paper = ["--gin_file", STAGE3, "--gin_file", LLAMA_GIN, "--gin_file", PAPER, "--model", "llama3_1_8b_instruct"]
    index = ["--index_rows", "1000003", "--index_dim", "768"]
    # fsdp=8: D split 8 ways; the 512 rollout rows 8 ways; kv heads whole.
    got = run_json(capsys, *paper, *index, "--mesh", "data=1,fsdp=8,tensor=1")
    params = llama_param_bytes(fsdp=8, tensor=1)
    assert got["devices"] == 8
    assert got["items"]["parameters"]["per_device"] == params  # bf16: what the sampler runs
    assert got["items"]["master_parameters"]["per_device"] == 2 * params  # f32 master weights
    assert got["items"]["optimizer_state"]["per_device"] == 4 * params + 4  # mu + nu in f32, int32 count
    assert got["items"]["grad_accumulator"]["per_device"] == 2 * params  # gradients of the f32 weights
    assert got["items"]["micro_batch_grad"]["per_device"] == 2 * params
    assert got["items"]["kv_cache"]["per_device"] == kv_cache_bytes(PAPER_ROWS // 8, PAPER_SLOTS, K // 1)
    # ExactIndex: ceil(rows / devices) rounded up to whole 4096-row blocks, float16 as embed stores it.
    assert got["items"]["embedding_table"]["per_device"] == -(-(-(-1000003 // 8)) // 4096) * 4096 * 768 * 2

    # data=2 x fsdp=4 x tensor=2 on 16 chips: D over 4, heads / FFN / vocab over 2, rows over 8.
    got = run_json(capsys, *paper, *index, "--mesh", "data=2,fsdp=4,tensor=2", "--devices", "16")
    params = llama_param_bytes(fsdp=4, tensor=2)
    assert got["devices"] == 16 and got["mesh"] == {"data": 2, "fsdp": 4, "tensor": 2}
    assert got["items"]["parameters"]["per_device"] == params
    assert got["items"]["optimizer_state"]["per_device"] == 4 * params + 4
    kv = kv_cache_bytes(PAPER_ROWS // (2 * 4), PAPER_SLOTS, K // 2)
    assert got["items"]["kv_cache"]["per_device"] == kv
    assert got["items"]["embedding_table"]["per_device"] == 65536 * 768 * 2  # ceil(1000003/16) -> 16 blocks
    resident = params + 2 * params + (4 * params + 4) + 65536 * 768 * 2  # bf16 + f32 master + moments + table
    assert got["peak"] == resident + max(kv, 4 * params)
    assert got["total"] == resident + kv + 4 * params
    assert got["notes"] == []


def test_indivisible_dims_are_counted_replicated_as_fit_spec_does(capsys):
    got = run_json(capsys, "--gin_file", STAGE3, "--gin_file", PAPER, "--model", "llama3_1_8b_instruct",
                   "--mesh", "data=1,fsdp=1,tensor=16")  # fmt: skip
    mesh = AbstractMesh((1, 1, 16), ("data", "fsdp", "tensor"))
    assert fit_spec(P(None, "fsdp", "tensor", None), (L, D, K, H), mesh)[2] is None  # 8 kv heads, 16 ways
    assert fit_spec(P(None, "fsdp", "tensor", None), (L, D, N, H), mesh)[2] == "tensor"  # 32 heads split
    assert got["items"]["parameters"]["per_device"] == llama_param_bytes(fsdp=1, tensor=16, kv_tensor=1)
    assert got["items"]["kv_cache"]["per_device"] == kv_cache_bytes(PAPER_ROWS, PAPER_SLOTS, K)
    dropped = [n for n in got["notes"] if "replicated over ('tensor',)" in n]
    assert sorted(n.split(":")[0] for n in dropped) == ["kv_cache", "layers/k_proj", "layers/v_proj"]


def test_cli_on_the_v4_32_preset_prints_the_same_figures(capsys):
    argv = ["--gin_file", STAGE3, "--gin_file", LLAMA_GIN, "--gin_file", os.path.join(GIN_DIR, "mesh", "v4_32.gin"),
            "--model", "llama3_1_8b_instruct", "--device_kind", "v4"]  # fmt: skip
    got = run_json(capsys, *argv)
    # v4_32: data=1, fsdp=4, tensor=4; base.gin's rollout: 2 prompts x 4 rows, 2048 + 192 + 1 -> 2304 slots.
    params = llama_param_bytes(fsdp=4, tensor=4)
    kv = kv_cache_bytes(2 * 4 // 4, -(-(2048 + 192 + 1) // 128) * 128, K // 4)
    assert got["mesh"] == {"data": 1, "fsdp": 4, "tensor": 4}
    assert got["items"]["parameters"]["per_device"] == params
    assert got["items"]["optimizer_state"]["per_device"] == 4 * params + 4
    assert got["items"]["kv_cache"]["per_device"] == kv
    assert got["fits"] == {"target": "v4", "hbm_bytes": 32 * GiB, "fits": True}

    out = subprocess.run([sys.executable, "-m", "medr3_jax.plan", *argv], capture_output=True, text=True, check=True)
    lines = {line.split()[1]: line for line in out.stdout.splitlines() if line.startswith("  resident")}
    assert f"{params / GiB:.2f} GiB" in lines["parameters"]
    assert f"{(4 * params + 4) / GiB:.2f} GiB" in lines["optimizer"]
    assert f"{2 * params / GiB:.2f} GiB" in lines["master"]
    assert f"{kv / GiB:.2f} GiB" in next(line for line in out.stdout.splitlines() if "KV cache" in line)
    assert f"FITS on v4 (32 GiB per device): peak {got['peak'] / GiB:.2f} GiB" in out.stdout


def test_unknown_binding_and_an_unreadable_model_path_are_errors(capsys, tmp_path):
    assert plan.main(["--gin_file", STAGE3, "--gin_param", "Experiment.num_stepz = 3"]) == 2
    err = capsys.readouterr().err
    assert "error: gin configuration" in err and "num_stepz" in err

    bindings = ["--gin_param", f"MODEL_DIR = '{tmp_path}'"]  # a directory without config.json
    assert plan.main(["--gin_file", STAGE3, "--gin_file", LLAMA_GIN, *bindings]) == 2
    err = capsys.readouterr().err
    assert f"Experiment.model = '{tmp_path}'" in err and "--model PRESET" in err


def test_without_master_weights_the_optimizer_state_follows_the_bf16_params(capsys):
    got = run_json(capsys, "--gin_file", STAGE3, "--gin_file", LLAMA_GIN, "--gin_file", PAPER,
                   "--model", "llama3_1_8b_instruct", "--mesh", "data=1,fsdp=8,tensor=1",
                   "--gin_param", "OptimizerConfig.master_dtype = None")  # fmt: skip
    params = llama_param_bytes(fsdp=8, tensor=1)
    assert "master_parameters" not in got["items"]
    assert got["items"]["optimizer_state"]["per_device"] == 2 * params + 4  # mu + nu in bf16
    assert got["items"]["grad_accumulator"]["per_device"] == params


def test_a_micro_batch_the_trainer_would_refuse_is_named_and_one_micro_batch_has_no_accumulator(capsys):
    base = ["--gin_file", STAGE3, "--gin_file", LLAMA_GIN, "--gin_file", PAPER, "--model", "llama3_1_8b_instruct",
            "--mesh", "data=1,fsdp=8,tensor=1"]  # fmt: skip
    got = run_json(capsys, *base, "--gin_param", "UpdateConfig.micro_batch = 48")  # minibatch 512 / 4 = 128
    assert any("UpdateConfig.micro_batch=48 does not divide the minibatch of 128 rows" in n for n in got["notes"])
    got = run_json(capsys, *base, "--gin_param", "UpdateConfig.micro_batch = None")  # one micro-batch
    assert "grad_accumulator" not in got["items"]
    assert got["items"]["micro_batch_grad"]["per_device"] == 2 * llama_param_bytes(fsdp=8, tensor=1)
    assert not any("does not divide" in n for n in got["notes"])
