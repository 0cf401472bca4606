"""A training run whose judge fails in every way a served model does (issue 24 item 5): an
OpenAI-compatible server on 127.0.0.1 that answers each prompt's first ask with a 500, a 429, a
200 whose body is not JSON, or a hang past the client's timeout (by turns), and its retry with a
grade. The run completes, every fault is counted in the metrics by kind, and the prompts whose
retry also failed fall back to the rule grade (`reward/judge_fallbacks`)."""

import itertools
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gin

from medr3_jax import train
from medr3_jax.trainer import read_scalars
from tests.trainer.train_cli import GIN_DIR

FAULTS = ("500", "429", "garbage", "hang", "ok")


class _FaultyJudge(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            fault = next(self.server.faults)
            self.server.seen[fault] += 1
        if fault == "hang":
            time.sleep(1.0)  # past HTTPJudge.timeout_s
            fault = "ok"
        if fault in ("500", "429"):
            body = b'{"error": "busy"}'
            self.send_response(int(fault))
            if fault == "429":
                self.send_header("Retry-After", "0")
        else:
            content = '```json\n{"reason": "canned", "score": 2}\n```'
            reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
            body = b"<html>bad gateway</html>" if fault == "garbage" else json.dumps(reply).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client gave up on a hung request
            pass

    def log_message(self, *args):  # quiet
        pass


def test_a_run_with_a_failing_judge_completes_and_counts_every_fault(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FaultyJudge)
    server.faults, server.lock = itertools.cycle(FAULTS), threading.Lock()
    server.seen = dict.fromkeys(FAULTS, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gin.clear_config()
        code = train.main([
            "--gin_file", os.path.join(GIN_DIR, "stage3.gin"), "--gin_file", os.path.join(GIN_DIR, "tiny.gin"),
            "--workdir", str(tmp_path), "--quiet",
            "--gin_param", "Experiment.judge = @HTTPJudge()",
            "--gin_param", f"HTTPJudge.base_url = 'http://127.0.0.1:{server.server_address[1]}/v1'",
            "--gin_param", "HTTPJudge.model = 'faulty'",
            "--gin_param", "HTTPJudge.timeout_s = 0.3",
            "--gin_param", "HTTPJudge.retries = 1",
            "--gin_param", "HTTPJudge.backoff_s = 0.0",
            "--gin_param", "RewardWeights.graph = 0.0",
            "--gin_param", "RewardRules.format_gate = False",  # every row is judged (the tiny policy never formats)
        ])  # fmt: skip
    finally:
        gin.clear_config()
        server.shutdown()
    assert code == 0
    scalars = read_scalars(str(tmp_path / "stage3" / "tb"))
    last = {k: v[-1][1] for k, v in scalars.items() if k.startswith(("judge/", "reward/"))}
    assert all(server.seen[f] > 0 for f in FAULTS), server.seen
    # the judge's counters are cumulative over the run: every fault the server served is counted
    assert last["judge/rate_limited"] == server.seen["429"]
    assert last["judge/http_errors"] == server.seen["500"] + server.seen["429"]
    assert last["judge/timeouts"] == server.seen["hang"]
    assert last["judge/bad_replies"] >= server.seen["garbage"]
    assert last["judge/requests"] == last["judge/ok"] + last["judge/failed"] > 0
    fallbacks = sum(v for _, v in scalars["reward/judge_fallbacks"])
    assert fallbacks > 0 and sum(v for _, v in scalars["reward/answer_by_judge"]) > 0
