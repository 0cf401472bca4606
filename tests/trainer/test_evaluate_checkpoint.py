"""`python -m medr3_jax.evaluate --checkpoint <training workdir>` (in process): the tiny stage-3
run's latest checkpoint, evaluated on the training rollout path with exact retrieval over its
index, writes results.json (accuracies equal to those recomputed from the predictions),
results.md, predictions and a PNG; a rerun after a cut resumes to the same results; a run with
retrieval off goes beside it, and `compare` reads both folders."""

import json
import os

from medr3_jax import evaluate
from medr3_jax.evaluation.report import summarize_split
from medr3_jax.evaluation.rollouts import read_predictions
from medr3_jax.retrieval.retriever import Retriever

PNG = b"\x89PNG\r\n\x1a\n"


def _argv(run_dir, data_dir, index_dir, out, *extra):
    return ["--checkpoint", str(run_dir), "--dataset", "mirage", "--split", "medqa", "--split", "pubmedqa",
            "--data_dir", data_dir, "--index_dir", index_dir, "--limit", "3", "--batch_size", "2",
            "--max_new_tokens", "32", "--mesh", "data=-1", "--out_dir", str(out), *extra]  # fmt: skip


def test_evaluate_a_training_checkpoint_resume_and_compare(one_process_run, sample_data_dir, byte_index, tmp_path,
                                                           capsys):  # fmt: skip
    searching = tmp_path / "searching"
    assert evaluate.main(_argv(one_process_run, sample_data_dir, byte_index, searching, "--retrieval", "exact")) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    result = json.loads((searching / "results.json").read_text())
    assert result["run"]["stage"] == "stage3" and result["run"]["step"] == 3 and result["run"]["retrieval"] == "exact"
    assert result["run"]["checkpoint"].startswith(os.path.join(str(one_process_run), "stage3"))
    valid = set(Retriever(byte_index, backend="bm25").store.ids(range(40)))
    for row, shown in zip(result["rows"], printed):
        preds = [p for p, _ in read_predictions(str(searching / f"predictions_mirage_{row['split']}.jsonl")).values()]
        assert len(preds) == 3 and summarize_split("mirage", row["split"], preds) == {k: v for k, v in shown.items()
                                                                                      if k != "seconds"}  # fmt: skip
        assert row["accuracy"] == sum(p["accuracy"] for p in preds) / 3
        for p in preds:
            (sample,) = p["samples"]
            assert set(sample["retrieved_ids"]) <= valid and len(sample["queries"]) <= 4
    assert "| average |" in (searching / "results.md").read_text()
    assert (searching / "accuracy.png").read_bytes()[:8] == PNG

    # cut the medqa predictions back to half a line of batch 2 and drop pubmedqa's: the rerun resumes
    medqa = searching / "predictions_mirage_medqa.jsonl"
    whole = medqa.read_bytes()
    first = whole.split(b"\n")
    medqa.write_bytes(b"\n".join(first[:2]) + b"\n" + first[2][:15])
    os.remove(searching / "predictions_mirage_pubmedqa.jsonl")
    assert evaluate.main(_argv(one_process_run, sample_data_dir, byte_index, searching, "--retrieval", "exact")) == 0
    assert medqa.read_bytes() == whole
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    resumed = json.loads((searching / "results.json").read_text())
    assert timeless(resumed["rows"]) == timeless(result["rows"]) and resumed["average"] == result["average"]
    # another run's settings into the same folder are refused, naming what differs
    assert evaluate.main(_argv(one_process_run, sample_data_dir, byte_index, searching, "--retrieval", "bm25")) == 2
    assert "retrieval: 'exact' then, 'bm25' now" in capsys.readouterr().err

    plain = tmp_path / "plain"
    assert evaluate.main(_argv(one_process_run, sample_data_dir, byte_index, plain, "--retrieval", "off",
                               "--name", "no search")) == 0  # fmt: skip
    capsys.readouterr()
    assert evaluate.main(["compare", str(searching), str(plain), "--out_dir", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| dataset | split | stage3 step 3 | no search |"
    assert "| mirage | medqa |" in table and "| average |" in table
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == PNG
    assert evaluate.main(["compare", str(tmp_path / "nothing")]) == 2
