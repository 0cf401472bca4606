"""rewards.judge: the authors' judge prompt (`contrib/med_reasoning_logical.py` in GitHub
8023looker/Med-R3) and reply reading by hand-written cases, re-asking unreadable replies,
HTTPJudge against a stub server on 127.0.0.1 (success, timeouts, garbage, HTTP 500 then
success, the concurrency bound, the API key kept secret), and LocalJudge with a scripted policy."""

import collections
import dataclasses
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.rewards.judge import (
    HTTPJudge,
    JudgeStats,
    LocalJudge,
    Verdict,
    answer_prompt,
    extract_graphs,
    graph_prompt,
    first_json_object,
    judge_answers,
    parse_verdict,
)
from tests.sampling.fakes import EOS, ScriptedLM, byte_tokenizer

MC = QARecord(id="7", dataset="medqa", question="Which organ makes insulin?",
              options={"A": "Liver", "B": "Pancreas", "C": "Spleen"}, answer="B", answer_text="Pancreas")  # fmt: skip
OPEN = QARecord(id="9", dataset="rarearena", question="Ataxia, low vitamin E.", answer_text="AVED")
SECRET = "sk-test-secret-0123456789"


# ---- parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply, verdict",
    [
        ('{"reason": "same drug", "score": 2}', Verdict(2.0, "same drug")),
        ('Thinking...\n```json\n{\n    "reason": "superset",\n    "score": 1\n}\n```', Verdict(1.0, "superset")),
        ('```json\n{"score": 0}\n``` then ```json\n{"reason": "r", "score": 2}\n```', Verdict(2.0, "r")),  # the last block
        ('{"reason": "r", "score": "2"}', Verdict(2.0, "r")),  # a string holding a number (their float())
        ('{"score": 1.5}', Verdict(1.5, "")),
        ('Prose {"reason": "wrong option", "score": 0} more prose', Verdict(0.0, "wrong option")),
        ('{not json} then {"score": 2}', Verdict(2.0, "")),  # the outer {...} fails: the first object that parses
        ('{"score": true}', None),
        ('{"score": "high"}', None),
        ('{"reason": "no score"}', None),
        ('{"score": NaN}', None),
        ("score: 2", None),
        ("", None),
    ],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


# The answer prompt as `compute_score` assembles it for MedQA/MedMCQA: VERIFY_SYSTEM_PROMPT_EN,
# a newline, VERIFY_USER_PROMPT_EN filled in (misleading options as a Python list). Their system
# text doubles the braces of its JSON examples and is never formatted, so their judge read "{{";
# we send single braces (the evident intent).
AUTHORS_USER_PROMPT = """## Question:
{question}
## Student's Answer:
{answer}
## Correct Answer:
{correct_answer}
## Misleading Options:
{misleading_options}"""


def test_answer_prompt_is_the_authors():
    prompt = answer_prompt(MC, "Pancreas, surely", question="Which organ makes insulin?")
    system, user = prompt.split("\n## Question:\n")
    assert system.startswith("## Role\nPlease judge whether the student's answer is the answer to the question as a teacher")
    assert "give a score of 0/1/2" in system and system.endswith('```json\n{\n    "reason": "scoring reason",\n    "score": 0/1/2\n}\n```')
    assert "{{" not in system
    expected = AUTHORS_USER_PROMPT.format(question="Which organ makes insulin?", answer="Pancreas, surely",
                                          correct_answer="Pancreas", misleading_options=["Liver", "Spleen"])  # fmt: skip
    assert "## Question:\n" + user == expected
    assert "## Misleading Options:\n['Liver', 'Spleen']" in prompt
    assert answer_prompt(MC, "x").count("Which organ makes insulin?") == 1  # default: the record's question


def test_answer_prompt_for_rarearena_is_their_diagnosis_prompt():
    prompt = answer_prompt(OPEN, "Ataxia with vitamin E deficiency")
    assert prompt.startswith("# Task\n\nAs a distinguished expert in the field of rare diseases")
    assert prompt.endswith("# Student's Answer:\nAtaxia with vitamin E deficiency\n\n# Reference Diagnosis:\nAVED")


def test_first_json_object_skips_arrays_and_fences():
    assert first_json_object('[1, 2] ```json\n{"a": {"b": 1}}\n```') == {"a": {"b": 1}}
    assert first_json_object("no braces") is None


class _ListJudge:
    """Replies from a list, one call after another (each call takes as many as it is asked)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.stats = JudgeStats()
        self.calls: list[list[str]] = []

    def complete(self, prompts):
        self.calls.append(list(prompts))
        taken, self.replies = self.replies[: len(prompts)], self.replies[len(prompts) :]
        assert len(taken) == len(prompts)
        return taken


def test_judge_answers_asks_unreadable_replies_again_up_to_three_times_and_counts_them():
    judge = _ListJudge([
        '{"score": 2, "reason": "ok"}', None, "no idea", '{"score": "x"}',  # first ask, 4 prompts
        '{"score": 1}', "still no idea",  # second ask: the two unreadable ones only
        "never",  # third ask
    ])  # fmt: skip
    assert judge_answers(judge, ["p0", "p1", "p2", "p3"]) == [Verdict(2.0, "ok"), None, Verdict(1.0, ""), None]
    assert judge.calls == [["p0", "p1", "p2", "p3"], ["p2", "p3"], ["p3"]]  # a failed request (None) is not re-asked
    assert judge.stats.bad_replies == 4
    assert judge_answers(_ListJudge(["nope"]), ["p"], attempts=1) == [None]

    judge = _ListJudge(['[["a", "r", "b", false], ["bad"]]', None, "prose"])
    stats = JudgeStats()
    prompts = [graph_prompt(t, []) for t in ("t1", "t2", "t3")]
    assert extract_graphs(judge, prompts, stats) == [[["a", "r", "b", False], ["bad"]], None, None]
    assert (stats.bad_replies, judge.stats.bad_replies) == (1, 0)  # entries are kept as written


def test_stats_as_metrics():
    metrics = JudgeStats(requests=3, ok=2, failed=1).as_metrics()
    assert metrics["judge/requests"] == 3.0 and metrics["judge/failed"] == 1.0
    assert set(JudgeStats().as_metrics("x/")) >= {"x/timeouts", "x/http_errors", "x/bad_replies", "x/retries"}
    assert {"x/rate_limited", "x/client_errors"} <= set(JudgeStats().as_metrics("x/"))


# ---- HTTP judge against a stub server -----------------------------------------------------
@dataclasses.dataclass
class _Stub:
    """Answers by markers in the prompt; records attempts, auth headers and peak concurrency."""

    url: str = ""
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    active: int = 0
    peak: int = 0
    attempts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    auth: list = dataclasses.field(default_factory=list)
    bodies: list = dataclasses.field(default_factory=list)

    def respond(self, prompt: str, attempt: int, auth: str | None) -> tuple[int, bytes, float]:
        """(status, body, delay in seconds)."""
        if "[leak]" in prompt:  # a misbehaving proxy that echoes the request headers
            return 200, f"bad gateway: Authorization: {auth}".encode(), 0.0
        if "[garbage]" in prompt:
            return 200, b"<html>proxy error</html>", 0.0
        if "[nochoices]" in prompt:
            return 200, b'{"error": {"message": "overloaded"}}', 0.0
        if "[down]" in prompt or ("[flaky]" in prompt and attempt == 1):
            return 500, b'{"error": "internal"}', 0.0
        content = '```json\n{"reason": "r", "score": 2}\n```' if "Student's Answer:" in prompt else f"echo: {prompt}"
        body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        return 200, body.encode(), 0.6 if "[slow]" in prompt else 0.05 if "[busy]" in prompt else 0.0


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        stub = self.server.stub
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = request["messages"][0]["content"]
        with stub.lock:
            stub.active += 1
            stub.peak = max(stub.peak, stub.active)
            stub.attempts[prompt] += 1
            attempt = stub.attempts[prompt]
            stub.auth.append(self.headers.get("Authorization"))
            stub.bodies.append(request)
        try:
            status, body, delay = stub.respond(prompt, attempt, self.headers.get("Authorization"))
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass
        finally:
            with stub.lock:
                stub.active -= 1

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.stub = _Stub(url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server.stub
    server.shutdown()
    server.server_close()


def _judge(stub, **kwargs):
    defaults = dict(timeout_s=0.2, retries=2, backoff_s=0.01, api_key_env="MEDR3_TEST_JUDGE_KEY")
    return HTTPJudge(stub.url, "stub-judge", **(defaults | kwargs))


def test_http_success_grades_and_sends_the_openai_request(stub, monkeypatch):
    monkeypatch.delenv("MEDR3_TEST_JUDGE_KEY", raising=False)
    judge = _judge(stub)
    assert judge_answers(judge, [answer_prompt(MC, "Pancreas"), answer_prompt(OPEN, "AVED")]) == [Verdict(2.0, "r")] * 2
    assert stub.bodies[0]["model"] == "stub-judge" and stub.bodies[0]["messages"][0]["role"] == "user"
    # The authors' judge sampling (`contrib/base_with_api.py` compute_score): T 0.9, top_p 0.6, 4096 tokens.
    assert (stub.bodies[0]["temperature"], stub.bodies[0]["top_p"], stub.bodies[0]["max_tokens"]) == (0.9, 0.6, 4096)
    _judge(stub, temperature=0.0, top_p=1.0, max_tokens=64).complete(["x"])
    assert (stub.bodies[-1]["temperature"], stub.bodies[-1]["top_p"], stub.bodies[-1]["max_tokens"]) == (0.0, 1.0, 64)
    assert stub.auth == [None, None, None]  # no key in the environment: no Authorization header
    assert (judge.stats.requests, judge.stats.ok, judge.stats.failed, judge.stats.retries) == (2, 2, 0, 0)


def test_http_timeouts_are_retried_then_none(stub, caplog):
    judge = _judge(stub)
    with caplog.at_level(logging.WARNING, logger="medr3_jax.rewards.judge"):
        assert judge.complete(["[slow] a", "[slow] b", "quick"]) == [None, None, "echo: quick"]
    s = judge.stats
    assert (s.requests, s.ok, s.failed, s.timeouts, s.retries) == (3, 1, 2, 6, 4)  # 3 attempts per slow prompt
    assert stub.attempts["[slow] a"] == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3 requests failed" in warnings[0].getMessage()  # one summary per batch


def test_http_garbage_and_errors(stub):
    judge = _judge(stub, retries=1)
    assert judge.complete(["[garbage]", "[nochoices]", "[down]"]) == [None, None, None]
    s = judge.stats
    assert (s.failed, s.bad_replies, s.http_errors, s.retries) == (3, 4, 2, 3)  # 2 attempts each


def test_http_500_then_success_on_retry(stub):
    judge = _judge(stub)
    assert judge_answers(judge, [answer_prompt(MC, "[flaky] Pancreas")]) == [Verdict(2.0, "r")]
    s = judge.stats
    assert (s.ok, s.failed, s.http_errors, s.retries) == (1, 0, 1, 1)


def test_http_connection_refused_counts():
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = HTTPJudge(f"http://127.0.0.1:{port}/v1", "none", retries=1, backoff_s=0.0, timeout_s=0.5)
    assert judge.complete(["hi"]) == [None]
    assert (judge.stats.connection_errors, judge.stats.failed) == (2, 1)


def test_http_concurrency_bound(stub):
    judge = _judge(stub, max_concurrency=3)
    replies = judge.complete([f"[busy] {i}" for i in range(15)])
    assert replies == [f"echo: [busy] {i}" for i in range(15)]  # in prompt order
    assert 2 <= stub.peak <= 3


def test_http_api_key_in_header_only(stub, monkeypatch, caplog):
    monkeypatch.setenv("MEDR3_TEST_JUDGE_KEY", SECRET)
    with caplog.at_level(logging.DEBUG, logger="medr3_jax"):
        judge = _judge(stub, retries=1)
        assert judge.complete(["hello", "[down]", "[leak]"])[0] == "echo: hello"
    assert set(stub.auth) == {f"Bearer {SECRET}"}
    assert caplog.records  # the judge did log (init, failed attempts, the summary)
    assert SECRET not in caplog.text and SECRET not in repr(judge) and SECRET not in str(judge)


def test_http_rejects_bad_settings():
    with pytest.raises(ValueError, match="http:// or https://"):
        HTTPJudge("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="max_concurrency >= 1"):
        HTTPJudge("http://127.0.0.1:8000", "m", max_concurrency=0)


# ---- local judge ----------------------------------------------------------------------------
def test_local_judge_grades_with_a_scripted_policy():
    template = "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}<bot>"
    tok = dataclasses.replace(byte_tokenizer(), chat_template=template)
    items = [(MC, "Pancreas"), (MC, "Liver"), (OPEN, "maybe AVED")]
    replies = ['{"reason": "same", "score": 2}', 'Wrong.\n```json\n{"reason": "liver", "score": 0}\n```', "not sure"]
    prompts = [tok.encode(f"<user>{answer_prompt(r, a)}</user><bot>") for r, a in items]
    rows = [p + tok.encode(reply) + [EOS] for p, reply in zip(prompts, replies)]
    rows.append(rows[0])  # batch_size 4: the one batch is padded with a repeat of the first prompt
    script = np.full((4, max(map(len, rows)) + 8), ord("x"), np.int32)
    for b, row in enumerate(rows):
        script[b, : len(row)] = row
    judge = LocalJudge(ScriptedLM(script), tok, max_new_tokens=64, batch_size=4, chat=True)
    assert judge.complete([]) == []
    verdicts = judge_answers(judge, [answer_prompt(r, a) for r, a in items], attempts=1)
    assert verdicts == [Verdict(2.0, "same"), Verdict(0.0, "liver"), None]
    assert (judge.stats.requests, judge.stats.ok, judge.stats.bad_replies) == (3, 3, 1)
