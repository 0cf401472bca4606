"""Services that fail on one host only (issue 24 item 5, two processes on 127.0.0.1): the retriever
raises on process 1 before the ranking shared by both, hangs past its timeout on process 0, and
gives too few token lists on process 1 after it; a judge server answers 500, 429, non-JSON and
hangs. Both hosts must take the same decisions (the failure notice where either failed), count
the job's faults, not just their own, and end exactly where one process that meets the same
faults ends (tests/trainer/multihost_faults.py). Before the engine prepared queries on each host
ahead of the shared ranking, process 0 waited inside the ranking for a process that had already
given up, and the hosts' collectives fell out of step."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import portpicker
import pytest

from tests.trainer.multihost_faults import FAULTS, JUDGED

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "trainer", "multihost_faults.py")


class _JudgeByPrompt(BaseHTTPRequestHandler):
    """Answers each prompt `<tag> <i> <how>` as `how` says: "429" on its odd-numbered asks (with
    Retry-After 0) and a grade on the others, "500" always, "garbage" a 200 whose body is not
    JSON, "hang" past the client's timeout, "ok" a grade naming prompt i."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        _, index, how = prompt.split()
        with self.server.lock:
            asks = self.server.asks[prompt] = self.server.asks.get(prompt, 0) + 1
        if how == "hang":
            time.sleep(1.5)  # the client's timeout_s is 1.0
        status, data = 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": f"grade {index}"}}]})
        if how == "500" or (how == "429" and asks % 2):
            status, data = int(how), '{"error": "busy"}'
        elif how == "garbage":
            data = "<html>bad gateway</html>"
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data.encode())
        except OSError:  # the client gave up on a hung request
            pass

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeByPrompt)
    server.lock, server.asks = threading.Lock(), {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _start(index_dir, judge_url, tag, processes):
    """The script on `processes` processes (two CPU devices in all), joined on 127.0.0.1."""
    port = portpicker.pick_unused_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "bench")]))  # fmt: skip
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={2 // processes}"
    return [
        subprocess.Popen(
            [sys.executable, SCRIPT, index_dir, judge_url, tag, str(port), str(processes), str(i)],
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for i in range(processes)
    ]


def _collect(procs):
    """Each process's JSON line and its stderr."""
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(err[-3000:] for _, err in outs)
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs], [err for _, err in outs]


def test_faults_on_one_host_leave_every_host_with_the_one_process_rollout(byte_index, judge_url):
    started = _start(byte_index, judge_url, "one", 1), _start(byte_index, judge_url, "two", 2)  # side by side
    (one,), _ = _collect(started[0])
    two, logs = _collect(started[1])
    assert [o.pop("process") for o in two] == [0, 1] and one.pop("process") == 0
    assert one["devices"] == two[0]["devices"] == 2
    assert two[0] == two[1] == one  # every host decided the same, and as one process did

    # the rounds FAULTS names fail (on one process each), every row gets the notice there; the
    # last round answers: each row's passages are the ones of its last search only
    rounds, rows = len(FAULTS) + 1, 4
    assert one["search_counts"] == [rounds] * rows
    assert all(len(ids) == 2 for ids in one["retrieved_ids"])  # top_k, from the round that answered
    assert all("retrieval_failed" in flags for flags in one["flags"])
    assert {k: v for k, v in one["retrieval"].items() if k != "retrieval/wait_share"} == {
        "retrieval/calls": rounds, "retrieval/failures": len(FAULTS) * rows, "retrieval/errors": 1,
        "retrieval/timeouts": 1, "retrieval/bad_replies": 1,
    }  # fmt: skip
    # each host logged each failed round: the one that failed says why, the other "on another process"
    for how, process in (("injected: the query encoder failed", 1), ("SearchTimeout", 0), ("passage_tokens gave", 1)):
        assert how in logs[process] and how not in logs[1 - process], how
    assert all(logs[p].count("on another process") == 2 - p for p in (0, 1)), logs

    # the judge: each prompt asked by one process; the replies and the job's counters agree
    assert one["judge_replies"] == [f"grade {i}" if how in ("ok", "429") else None for i, how in enumerate(JUDGED)]
    stats = one["judge"]
    assert stats["judge/requests"] == len(JUDGED) and stats["judge/failed"] == 3 and stats["judge/ok"] == 3
    assert stats["judge/rate_limited"] == 1 and stats["judge/timeouts"] == 2  # the hang, asked twice
    assert stats["judge/http_errors"] == 1 + 2  # the 429, then the 500 asked twice
