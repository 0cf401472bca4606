"""Stage 3's reasoning-graph term, live: `python -m medr3_jax.train --gin_file=gin/stage3.gin
--gin_file=gin/tiny.gin` (in process) with a judge that is a real OpenAI-compatible HTTP server
on 127.0.0.1 (canned replies) and the bundled reference records. The tiny random policy never
writes a well-formed response, so the format gate is switched off for this run: every row is
then judged, and every row of a question with references gets a graph score."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gin
from medr3_jax import train
from medr3_jax.assets import sample_references
from medr3_jax.data.references import read_references
from medr3_jax.trainer import read_scalars
from tests.trainer.train_cli import GIN_DIR


class _Judge(BaseHTTPRequestHandler):
    """Answers the answer prompt with a top grade, and the graph prompt with the first
    reference graph it was shown (so the extracted graph matches that reference)."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][0]["content"]
        if "## Reference Knowledge Graphs:\n" in prompt:
            graph = prompt.split("## Reference Knowledge Graphs:\n")[1].split("\n")[0]
            content = f"Here is the graph:\n```json\n{graph}\n```"
            self.server.asked["graph"] += 1
        else:
            content = '```json\n{"reason": "canned", "score": 2}\n```'
            self.server.asked["answer"] += 1
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


def test_stage3_with_an_http_judge_and_the_bundled_references_scores_the_graph_term(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    server.asked = {"graph": 0, "answer": 0}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gin.clear_config()
        code = train.main([
            "--gin_file", os.path.join(GIN_DIR, "stage3.gin"), "--gin_file", os.path.join(GIN_DIR, "tiny.gin"),
            "--workdir", str(tmp_path),
            "--gin_param", "Experiment.judge = @HTTPJudge()",
            "--gin_param", f"HTTPJudge.base_url = 'http://127.0.0.1:{server.server_address[1]}/v1'",
            "--gin_param", "HTTPJudge.model = 'canned'",
            "--gin_param", "RewardRules.format_gate = False",
        ])  # fmt: skip
    finally:
        gin.clear_config()
        server.shutdown()
    assert code == 0
    scalars = read_scalars(str(tmp_path / "stage3" / "tb"))
    graph = [v for _, v in scalars["reward/graph"]]
    assert len(graph) == 2 and all(v > 0.5 for v in graph)  # path and entity Jaccard 1, plus the cosine share
    assert [v for _, v in scalars["reward/graph_missing"]] == [0.0, 0.0]
    assert [v for _, v in scalars["reward/answer"]] == [1.0, 1.0]  # the judge's top grade
    rows = sum(v for _, v in scalars["reward/answer_by_judge"])
    assert server.asked == {"graph": rows, "answer": rows} and scalars["judge/failed"][-1][1] == 0.0
    audit = [json.loads(line) for line in open(tmp_path / "stage3" / "rollouts" / "step_000001.jsonl")]
    refs = read_references(sample_references())
    assert all((row["dataset"], row["question_id"]) in refs for row in audit)
    assert all(row["components"]["graph"] > 0.5 and row["answer_reason"] == "canned" for row in audit)
