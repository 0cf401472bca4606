"""The TFDS builders on the bundled sample set (written in the official raw formats): split
sizes and record contents against the raw files read here with plain json/csv, the evidence
map, bad-record handling and the prepare CLI."""

import csv
import glob
import json
import os
import shutil

import pytest

from medr3_jax import assets
from medr3_jax.data import prepare
from medr3_jax.data.datasets import load_records, prepare_dataset
from medr3_jax.data.records import DataError
from medr3_jax.retrieval.corpus import read_chunks

SAMPLE = assets.SAMPLE_DATA


def _jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh.read().split("\n") if line]


def test_medqa_splits_and_records(sample_data_dir):
    for split in ("train", "dev", "test"):
        raw = _jsonl(glob.glob(f"{SAMPLE}/medqa/**/4_options/phrases_no_exclude_{split}.jsonl", recursive=True)[0])
        records = load_records("medqa", split, sample_data_dir)
        assert [r.id for r in records] == [f"{i:04d}" for i in range(len(raw))]
        for record, line in zip(records, raw):
            assert (record.question, record.options, record.answer) == (
                line["question"].strip(),
                line["options"],
                line["answer_idx"],
            )
    five = load_records("medqa/us_5_options", "test", sample_data_dir)
    assert all(len(r.options) == 5 for r in five)


def test_medmcqa_gold_is_cop_minus_one(sample_data_dir):
    raw = {o["id"]: o for o in _jsonl(f"{SAMPLE}/medmcqa/dev.json")}
    records = load_records("medmcqa", "dev", sample_data_dir)
    assert {r.id for r in records} == set(raw)
    for r in records:
        assert (
            r.answer == "ABCD"[raw[r.id]["cop"] - 1] and r.answer_text == raw[r.id]["op" + "abcd"[raw[r.id]["cop"] - 1]]
        )


def test_pubmedqa_and_mmlu_sizes(sample_data_dir):
    with (
        open(f"{SAMPLE}/pubmedqa/data/ori_pqal.json") as fh,
        open(f"{SAMPLE}/pubmedqa/data/test_ground_truth.json") as gh,
    ):
        ori, truth = json.load(fh), json.load(gh)
    assert {r.id for r in load_records("pubmedqa", "test", sample_data_dir)} == set(truth)
    assert {r.id for r in load_records("pubmedqa", "train", sample_data_dir)} == set(ori) - set(truth)
    rows = 0
    for path in glob.glob(f"{SAMPLE}/mmlu/data/test/*_test.csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            rows += len(list(csv.reader(fh)))
    assert len(load_records("mmlu_med", "test", sample_data_dir)) == rows


def test_bioasq_keeps_yes_no_only(sample_data_dir):
    with open(f"{SAMPLE}/bioasq/Task11BGoldenEnriched/11B1_golden.json") as fh:
        questions = json.load(fh)["questions"]
    yesno = [q for q in questions if q["type"] == "yesno"]
    records = load_records("bioasq", "test", sample_data_dir)
    assert len(records) == len(yesno) < len(questions)
    by_id = {q["id"]: q for q in yesno}
    for r in records:
        pmids = [f"PMID:{d.rsplit('/', 1)[1]}" for d in by_id[r.id]["documents"]]
        assert list(r.evidence_ids) == pmids and r.answer_text == by_id[r.id]["exact_answer"]


def test_evidence_ids_point_into_the_sample_corpus(sample_data_dir):
    corpus = {p.id for p in read_chunks([assets.sample_corpus_dir()])}
    assert 250 <= len(corpus) <= 350
    splits = {"medqa": ("train", "dev", "test"), "medmcqa": ("train", "dev"), "pubmedqa": ("train", "test"),
              "mmlu_med": ("dev", "test"), "bioasq": ("test",)}  # fmt: skip
    total = 0
    for name, names in splits.items():
        for split in names:
            for record in load_records(name, split, sample_data_dir):
                assert record.evidence_ids, f"{name}/{split}/{record.id} has no evidence ids"
                assert set(record.evidence_ids) <= corpus, (name, record.id, record.evidence_ids)
                total += 1
    assert 55 <= total <= 70


def test_mirage_matches_the_per_dataset_builders(sample_data_dir):
    pairs = {"medqa": ("medqa", "test"), "medmcqa": ("medmcqa", "dev"), "pubmedqa": ("pubmedqa", "test"),
             "bioasq": ("bioasq", "test"), "mmlu": ("mmlu_med", "test")}  # fmt: skip
    for subset, (name, split) in pairs.items():
        mirage = {r.id: r for r in load_records("mirage", subset, sample_data_dir)}
        direct = {r.id: r for r in load_records(name, split, sample_data_dir)}
        assert set(mirage) == set(direct)
        for rid, r in mirage.items():
            assert (r.question, r.options, r.answer) == (direct[rid].question, direct[rid].options, direct[rid].answer)
            assert set(r.evidence_ids) == set(direct[rid].evidence_ids)


def test_bad_records_raise_or_are_counted(tmp_path):
    manual = tmp_path / "medmcqa"
    shutil.copytree(assets.sample_dataset_dir("medmcqa"), manual)
    with open(manual / "train.json", "a") as fh:
        fh.write('{"question":"Broken","cop":7,"opa":"a","opb":"b","opc":"c","opd":"d","id":"x"}\n')
    with pytest.raises(DataError, match=r"train\.json:\d+: bad gold: cop=7"):
        prepare_dataset("medmcqa", str(manual), str(tmp_path / "strict"))
    builder = prepare_dataset("medmcqa", str(manual), str(tmp_path / "lenient"), skip_bad_records=True)
    assert builder.info.metadata["skipped"] == {"bad gold": 1}
    assert builder.info.splits["train"].num_examples == len(_jsonl(manual / "train.json")) - 1


def test_unknown_or_unbuilt_datasets(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'medqa2'"):
        load_records("medqa2", "test", str(tmp_path))
    with pytest.raises(DataError, match="no config 'us_6_options'"):
        load_records("medqa/us_6_options", "test", str(tmp_path))
    with pytest.raises(DataError, match="is not built .* run `python -m medr3_jax.data.prepare --dataset pubmedqa"):
        load_records("pubmedqa", "test", str(tmp_path))
    with pytest.raises(DataError, match="no file named 'ori_pqal.json'"):
        prepare_dataset("pubmedqa", str(tmp_path), str(tmp_path / "out"))


def test_prepare_cli_summary_and_dump(tmp_path, capsys):
    assert prepare.main(["--dataset", "bioasq", "--sample", "--data_dir", str(tmp_path), "--dump"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    summary = json.loads(lines[0])
    assert summary["splits"] == {"test": len(lines) - 1}
    assert summary["filtered"] == {"type 'factoid' (not yesno)": 1, "type 'summary' (not yesno)": 1}
    dumped = [json.loads(line) for line in lines[1:]]
    assert {d["split"] for d in dumped} == {"test"} and all(d["options"] == {"A": "yes", "B": "no"} for d in dumped)
    assert prepare.main(["--dataset", "pubmedqa", "--manual_dir", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert os.path.isdir(summary["data_dir"])
