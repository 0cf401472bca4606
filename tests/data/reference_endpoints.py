"""A canned OpenAI-compatible server on 127.0.0.1 playing teacher, grader and extractor for the
reference builder's tests. Every reply is a function of the prompt alone (so a rerun gets the
same replies), and the questions are split by a hash into ones that pass, ones the grader
always scores 3, and ones whose graph the extractor never writes."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEACHER_MARK = "You are a medical expert.  \nGiven a question"
GRADER_MARK = "You will be given a question, a student's answer"
EXTRACTOR_MARK = "Knowledge graph:\n"


def kind_of(question: str) -> str:
    """'pass', 'low_grade' or 'no_graph', fixed per question."""
    return ("pass", "pass", "low_grade", "no_graph")[int(hashlib.sha256(question.encode()).hexdigest(), 16) % 4]


def question_of(prompt: str) -> str:
    for mark in ("\nQuesion: ", "\nQuestion: ", "\n### Question:\n"):
        if mark in prompt:
            tail = prompt.split(mark, 1)[1]
            return tail.split("\nResponse:", 1)[0].split(" \nExisting Answer", 1)[0].split("\n### Student", 1)[0]
    raise AssertionError(f"no question in prompt: {prompt[:200]!r}")


def _words(text: str, n: int) -> str:
    return " ".join(text.replace("<", " ").replace(">", " ").split()[:n])


class Endpoints(ThreadingHTTPServer):
    def __init__(self, delay_s: float = 0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay_s = delay_s
        self.asked: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.prompts: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reply(self, prompt: str, completions: bool) -> tuple[str, str]:
        """(text, finish_reason) for one prompt."""
        if prompt.startswith(GRADER_MARK):
            question = question_of(prompt)
            score = 3 if kind_of(question) == "low_grade" else 5
            return f'```json\n{{"score": {score}, "reason": "canned"}}\n```', "stop"
        if prompt.rstrip().endswith(EXTRACTOR_MARK.strip()):
            chain = prompt.split("Reasoning process: ", 1)[1]
            if "no graph" in chain:
                return "I cannot draw this one.", "stop"
            topic = chain.split("<search>", 1)[1].split("</search>", 1)[0].strip()
            graph = [[topic, "is found in", "the corpus", "True"], ["the corpus", "supports", "answer", "False"]]
            return json.dumps(graph), "stop"
        question = question_of(prompt)
        searched = "</search><document>" in prompt
        if not searched:
            lead = "" if completions else "<think>"
            return f"{lead}The case is about {_words(question, 4)}.<search> {_words(question, 6)} ", "stop"
        verdict = "no graph" if kind_of(question) == "no_graph" else "the passages settle it"
        return f" Reading them, {verdict}.</think><answer>{_words(question, 2)}</answer>", "stop"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        completions = self.path.endswith("/completions") and not self.path.endswith("/chat/completions")
        prompt = body["prompt"] if completions else body["messages"][0]["content"]
        with self.server.lock:
            self.server.prompts.append(prompt)
        time.sleep(self.server.delay_s)
        text, finish = self.server.reply(prompt, completions)
        choice = {"text": text} if completions else {"message": {"role": "assistant", "content": text}}
        out = json.dumps({"choices": [choice | {"finish_reason": finish}], "usage": {"completion_tokens": 7}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass
