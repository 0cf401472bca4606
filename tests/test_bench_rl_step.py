"""bench/rl_step.py end to end on the tiny preset (the whole RL step bench/gpu.sh runs at Qwen2.5-1.5B
shapes over a 1M-row index): every row searched and sampled exactly as its schedule says, and the
engine's slot accounting (decode calls, idle slots, slots left idle by rows waiting for retrieval,
retrieval rounds) equals a step-by-step simulation of segmented decoding over the same schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = {"--preset": "tiny", "--passages": "3000", "--prompts": "2", "--group": "3", "--prompt_tokens": "48",
        "--max_response": "640", "--segment": "16", "--passage_tokens": "8", "--sequence_bucket": "64",
        "--micro_batch": "3", "--steps": "1", "--seed": "3"}  # fmt: skip


def simulate_segments(turns: list[list[int]], segment: int) -> dict[str, float]:
    """Segmented decoding by hand: each call, every running row samples min(left in its turn,
    segment) tokens; the call lasts as long as its longest row; a row that ends a search turn waits
    out the call and resumes in the next one (after its documents are appended), a row that ends
    its last turn is done."""
    turn, left = [0] * len(turns), [t[0] for t in turns]
    running = [True] * len(turns)
    calls = slots = used = waiting = rounds = 0
    while any(running):
        took = [min(left[b], segment) if running[b] else 0 for b in range(len(turns))]
        steps = max(took)
        calls, slots, used = calls + 1, slots + len(turns) * steps, used + sum(took)
        searched = False
        for b, n in enumerate(took):
            if not running[b]:
                continue
            left[b] -= n
            if left[b]:
                continue
            if turn[b] < len(turns[b]) - 1:
                turn[b] += 1
                left[b] = turns[b][turn[b]]
                waiting += steps - n
                searched = True
            else:
                running[b] = False
        rounds += searched
    return {"decode_calls": calls, "idle_slot_share": 1.0 - used / slots, "retrieval_wait_slot_share": waiting / slots,
            "retrieval_calls": rounds}  # fmt: skip


@pytest.fixture(scope="module")
def report() -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "bench", "rl_step.py")] + [x for kv in ARGS.items() for x in kv]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def turns(report) -> list[list[int]]:
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        from rl_step import draw_turns  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    room = int(ARGS["--max_response"]) - 3 * report["document_block_tokens_max"] - 1
    return draw_turns(report["rows"], 3, room, seed=int(ARGS["--seed"]))


def test_draw_turns_fit_the_room_and_vary():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        from rl_step import draw_turns  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    drawn = draw_turns(200, 3, 100, seed=0)
    assert all(1 <= len(t) <= 4 and min(t) >= 1 and 25 <= sum(t) <= 100 for t in drawn)
    assert {len(t) for t in drawn} == {1, 2, 3, 4} and len({sum(t) for t in drawn}) > 20


def test_rows_follow_their_schedule_and_the_slot_accounting_matches_a_simulation(report, turns):
    expected = simulate_segments(turns, int(ARGS["--segment"]))
    assert report["rows"] == 6 and report["index"]["passages"] == 3000
    for step in (report["first_step"], report["mean"]):
        assert step["schedule_followed"]
        assert step["sampled_tokens"] == sum(map(sum, turns))
        assert step["searches_per_row"] == pytest.approx(sum(len(t) - 1 for t in turns) / len(turns))
        for key, value in expected.items():
            assert step[key] == pytest.approx(value, abs=1e-12), key
        # prompts + sampled + documents (at least half of each passage's tokens in every block)
        assert step["train_tokens"] > 6 * 48 + step["sampled_tokens"] + 5 * 4 * step["searches_per_row"] * 6
    mean = report["mean"]
    assert all(mean[k] > 0 for k in ("prefill_s", "decode_s", "retrieval_s", "append_s", "score_s", "update_s"))
    assert 0 < mean["retrieval_share"] < 1 and mean["train_tokens_s"] > mean["sampled_tokens_s"] > 0
