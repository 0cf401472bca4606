#!/usr/bin/env bash
# Every accelerator benchmark, sized for one GPU, in parts (PARTS picks them; all by default):
#   sampler       the sampler at Qwen2.5-1.5B / LLaMA-3.2-1B shapes vs transformers `generate` on the same
#                 card (its dynamic cache, and a static cache that generate torch.compiles on CUDA), with the
#                 accelerator defaults (bf16, dense windowed decode attention), the other variants, and
#                 append vs re-prefill                                   (H100: about 4 min at the default budget);
#                 then vLLM's offline generate at Qwen2.5-1.5B shapes (bench/vllm_peer.py), when vLLM is importable
#   train         a policy update vs a transformers training step          (about 1.5 min)
#   rl            the whole RL step at real shapes, exact retrieval over a 1M-row index on the device
#                 (bench/rl_step.py; the index is written on the host while the other parts run) (about 2.5 min)
#   paper         the paper's lengths: 2048-token prompts in 16k-slot caches (bench/paper_lengths.py) (about 1.5 min)
#   whole_logits  the train step with whole-width logits, no peer           (about 1 min)
# All of them take about 10 minutes on an H100, more than one 10-minute device call: run them as two,
# e.g. PARTS="sampler train" then PARTS="rl paper whole_logits" into the same DIR. JSON and logs go to
# DIR; a summary of whatever DIR holds is printed last.
#
#   bash bench/gpu.sh [DIR]        # needs medr3_jax importable, jax with CUDA, torch with CUDA
#
# Environment: PARTS (above); RUN_LEARNING=1 adds bench/learning.py --size gpu; PYTHON (default python3);
# SAMPLER_BUDGET_S (default 150: no sampler measurement starts after it); XLA_PYTHON_CLIENT_MEM_FRACTION
# (default 0.5: the sampler's torch peer runs in the same process; the other parts take 0.9);
# INDEX_DIR (default: a temporary directory; the rl part's index, reused when it is complete there).
set -uo pipefail
out=${1:-bench_out}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >"$out/gpu.txt" 2>&1
"$py" -c 'import jax, flax, torch, transformers; print("jax", jax.__version__, "flax", flax.__version__, "torch", torch.__version__, "transformers", transformers.__version__, jax.devices())' >>"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
# Stop at once, saying why, when JAX runs on the CPU: every figure below would be a CPU figure.
if ! "$py" -c 'import jax, sys; sys.exit(jax.default_backend() == "cpu")' >>"$out/gpu.txt" 2>&1; then
  echo "bench/gpu.sh: JAX sees no accelerator (jax.default_backend() is cpu, or jax failed to import; see $out/gpu.txt): stopping" >&2
  exit 3
fi

parts=" ${PARTS:-sampler train rl paper whole_logits} "
want() { [[ "$parts" == *" $1 "* ]]; }
if want rl; then  # the 1M-row index on the host (CPU work) while the device runs the parts before rl
  index=${INDEX_DIR:-$(mktemp -d)}
  timeout 600 "$py" "$here/rl_step.py" --write_only --index_dir "$index" --passages 1000000 \
    >"$out/rl_index.json" 2>"$out/rl_index.log" &
  writer=$!
fi
if want sampler; then
  budget=${SAMPLER_BUDGET_S:-150}
  timeout $((budget + 120)) "$py" "$here/sampler.py" --real_sizes --hf --hf_static --variants blockwise/1,dense/all \
    --variant_batches 64 --append_chunks 256 --budget_s "$budget" --out "$out/sampler.json" >"$out/sampler.log" 2>&1
  echo "sampler: exit $?"
  # the serving-engine peer, in its own process once ours has let go of the card (item 2); without vLLM it
  # writes {"skipped": why} at once
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 300 "$py" "$here/vllm_peer.py" --model qwen2_5_1_5b --batches 64,128,256 \
    --out "$out/vllm_peer.json" >"$out/vllm_peer.log" 2>&1
  echo "vllm peer: exit $?"
fi
if want train; then
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 240 "$py" "$here/train_step.py" --preset qwen2_5_1_5b --rows 4 --width 1024 \
    --rl_steps 0 >"$out/train_step.json" 2>"$out/train_step.log"
  echo "train_step: exit $?"
fi
if want rl; then  # issue 22 item 5: 16 prompts x 8 rows, 512-token prompts, responses up to 2048 tokens
  wait "$writer"
  echo "rl index: exit $?"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 300 "$py" "$here/rl_step.py" --preset qwen2_5_1_5b --index_dir "$index" \
    --prompts 16 --group 8 --prompt_tokens 512 --max_response 2048 --steps 1 --out "$out/rl_step.json" \
    >"$out/rl_step.log" 2>&1
  echo "rl_step: exit $?"
  [ -n "${INDEX_DIR:-}" ] || rm -rf "$index"
fi
if want paper; then  # the paper's lengths: 2048-token prompts, 16k-slot caches, the largest batch that fits (item 4)
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 300 "$py" "$here/paper_lengths.py" --preset qwen2_5_1_5b \
    --out "$out/paper_lengths.json" >"$out/paper_lengths.log" 2>&1
  echo "paper_lengths: exit $?"
fi
if want whole_logits; then  # the train step with whole-width logits (UpdateConfig.logits_chunk = 0)
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 240 "$py" "$here/train_step.py" --preset qwen2_5_1_5b --rows 4 --width 1024 \
    --rl_steps 0 --logits_chunk 0 --no_peer >"$out/train_step_whole_logits.json" 2>"$out/train_step_whole_logits.log"
  echo "train_step (whole logits): exit $?"
fi
if [ "${RUN_LEARNING:-0}" = 1 ]; then  # bench/learning.py's GPU size (about 5 more minutes): lr vs lr = 0 on SmolLM2
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 420 "$py" "$here/learning.py" --size gpu --out "$out/learning.json" \
    >"$out/learning.log" 2>&1
  echo "learning: exit $? (verdict in $out/learning.json)"
fi

"$py" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
s = {}
try:
    s = json.load(open(os.path.join(out, "sampler.json")))
    print("device", s["device"], "roofline measured", s.get("roofline"), "spec", s.get("roofline_spec"))
    for name, m in s.get("models", {}).items():
        for r in m["decode"]:
            print(name, "B=%d" % r["batch"], "ours %.0f tok/s" % r["ours_tok_s"], "hf %.0f" % r.get("hf_tok_s", 0),
                  "x%.2f" % r.get("speedup_vs_hf", 0),
                  "hf static-cache%s %.0f x%.2f" % (" compiled" if r.get("hf_static_compiled") else "", r.get("hf_static_tok_s", 0),
                                                     r.get("speedup_vs_hf_static", 0)),
                  "step %.2f ms" % r["decode_step_ms"],
                  "prefill %.3f s" % r["prefill_s"], "decode share: measured roofline %.2f" % r["decode_share_of_roofline"],
                  "spec %.2f" % r.get("decode_share_of_spec", float("nan")),
                  "first call %.1f s" % r["first_call_s"])
        for r in m.get("variants", []):
            print(name, "variant", r["variant"], "B=%d" % r["batch"], "step %.2f ms" % r["decode_step_ms"],
                  "prefill %.3f s" % r["prefill_s"], "first call %.1f s" % r["first_call_s"])
        for r in m.get("append_vs_reprefill", []):
            print(name, "append %.3f s" % r["append_s"], "reprefill %.3f s" % r["reprefill_s"], "x%.2f" % r["speedup"])
    print("skipped", s.get("skipped_over_budget"))
except Exception as err:  # a partial or missing file: say so, the logs have the rest
    print("sampler summary:", repr(err))
try:
    v = json.load(open(os.path.join(out, "vllm_peer.json")))
    if "skipped" in v:
        print("vllm peer: skipped:", v["skipped"])
    ours = {r["batch"]: r["ours_tok_s"] for r in s.get("models", {}).get(v["model"], {}).get("decode", [])}
    for r in v.get("decode", []):
        print(v["model"], "B=%d" % r["batch"], "vllm %s %.0f tok/s" % (v["vllm"], r["vllm_tok_s"]),
              "ours/vllm x%.2f" % (ours[r["batch"]] / r["vllm_tok_s"]) if r["batch"] in ours else "")
except Exception as err:
    print("vllm peer summary:", repr(err))
for name in ("train_step.json", "train_step_whole_logits.json"):
  try:
    t = json.load(open(os.path.join(out, name)))
    print("logits_chunk", t["ours"].get("logits_chunk"), end=" ")
    print("train step", t["model"], t["batch"], "ours %.3f s mfu %.2f (spec %.2f)" % (t["ours"]["step_s"], t["ours"]["mfu"], t["ours"].get("mfu_spec", float("nan"))),
          "peak %.0f TFLOP/s" % t["peak_matmul_tflop_s"])
    if "transformers_torch" in t:
        print("  torch %.3f s mfu %.2f" % (t["transformers_torch"]["step_s"], t["transformers_torch"]["mfu"]),
              "x%.2f" % t["speedup_vs_torch"])
  except Exception as err:
    print("train step summary:", repr(err))
try:
    r = json.load(open(os.path.join(out, "rl_step.json")))
    m = r["mean"]
    print("rl step", r["preset"], "rows %d" % r["rows"], "index %d" % r["index"]["passages"],
          {k: round(m[k], 3) for k in ("prefill_s", "decode_s", "retrieval_s", "append_s", "rollout_host_s",
                                       "score_s", "update_s", "step_s")},
          "retrieval share %.3f idle slots %.3f waiting %.3f" % (m["retrieval_share"], m["idle_slot_share"],
                                                                  m["retrieval_wait_slot_share"]),
          "tokens/s train %.0f sampled %.0f" % (m["train_tokens_s"], m["sampled_tokens_s"]),
          "schedule followed", m["schedule_followed"])
except Exception as err:
    print("rl step summary:", repr(err))
try:
    p = json.load(open(os.path.join(out, "paper_lengths.json")))
    for t in p["tried"]:
        print("paper lengths", p["preset"], "B=%d" % t["batch"], {k: t[k] for k in t if k not in ("batch",)})
except Exception as err:
    print("paper lengths summary:", repr(err))
PY
