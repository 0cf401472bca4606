"""Readers of the official raw formats, on small files written byte-for-byte as released
(DATA_FORMATS.md): keys, separators, encodings, line endings and the known quirks."""

import json

import pytest

from medr3_jax.data.records import BadRecords, DataError
from medr3_jax.data.releases import (
    find_release_file,
    read_bioasq,
    read_evidence_map,
    read_medmcqa,
    read_medqa,
    read_mirage,
    read_mmlu,
    read_pubmedqa,
    read_rarearena,
)


def _write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return str(path)


# ---- MedQA ----------------------------------------------------------------------------------
MEDQA_4 = (
    '{"question": "  A 30-year-old man has a temperature of 38.5°C.\\nWBC 12,000/mm³. Next step?  ", '
    '"answer": "Blood cultures", "options": {"A": "Observe", "B": "Blood cultures", "C": "CT", "D": "MRI"}, '
    '"meta_info": "step2&3", "answer_idx": "B", "metamap_phrases": ["man", "temperature"]}\n'
    '{"question": "Which enzyme?", "answer": "Lipase", "options": {"A": "Lipase", "B": "Amylase", '
    '"C": "Trypsin", "D": "Pepsin"}, "meta_info": "step1", "answer_idx": "A", "metamap_phrases": []}\n'
)


def test_medqa_four_options(tmp_path):
    path = _write(tmp_path / "US/4_options/phrases_no_exclude_test.jsonl", MEDQA_4)
    records = list(read_medqa(path, BadRecords()))
    assert [r.id for r in records] == ["0000", "0001"]  # MIRAGE: 0-based line index, 4 digits
    first = records[0]
    assert first.question == "A 30-year-old man has a temperature of 38.5°C.\nWBC 12,000/mm³. Next step?"
    assert (first.answer, first.answer_text, list(first.options)) == ("B", "Blood cultures", ["A", "B", "C", "D"])
    assert records[1].answer == "A" and records[1].wrong_options == {"B": "Amylase", "C": "Trypsin", "D": "Pepsin"}


def test_medqa_five_options_without_metamap(tmp_path):
    line = {
        "question": "Q?",
        "answer": "e",
        "options": dict(zip("ABCDE", "abcde")),
        "meta_info": "step1",
        "answer_idx": "E",
    }
    path = _write(tmp_path / "US/test.jsonl", json.dumps(line, ensure_ascii=False) + "\n")
    (record,) = read_medqa(path, BadRecords())
    assert record.answer == "E" and len(record.options) == 5


def test_medqa_gold_text_must_match_the_gold_letter(tmp_path):
    bad = MEDQA_4.replace('"answer": "Lipase"', '"answer": "Amylase"')
    path = _write(tmp_path / "test.jsonl", bad)
    with pytest.raises(DataError, match=r"test\.jsonl:2: bad gold: 'answer' 'Amylase' differs"):
        list(read_medqa(path, BadRecords()))
    policy = BadRecords(skip=True)
    assert [r.id for r in read_medqa(path, policy)] == ["0000"]
    assert policy.skipped == {"bad gold": 1}


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = _write(tmp_path / "test.jsonl", MEDQA_4 + '{"question": "broken\n')
    with pytest.raises(DataError, match=r"test\.jsonl:3: not valid JSON"):
        list(read_medqa(path, BadRecords()))


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="empty file"):
        list(read_medqa(_write(tmp_path / "test.jsonl", ""), BadRecords(skip=True)))


# ---- MedMCQA --------------------------------------------------------------------------------
def _medmcqa_line(cop, question="Drug of choice for absence seizures is:", rid="7c7d4d3e-5d2b-4b1f-9a54-5f0c1a2b3c4d"):
    obj = {"question": question, "exp": None, "cop": cop, "opa": "Valproate", "opb": "Ethosuximide",
           "opc": "Phenytoin", "opd": "Carbamazepine", "subject_name": "Pharmacology", "topic_name": None,
           "id": rid, "choice_type": "single"}  # fmt: skip
    if cop is None:
        del obj["cop"]
    return json.dumps(obj, separators=(",", ":"))  # ensure_ascii=True, compact, as released


def test_medmcqa_cop_is_one_based(tmp_path):
    lines = [_medmcqa_line(c, rid=f"id-{c}") for c in (1, 2, 3, 4)]
    path = _write(tmp_path / "dev.json", "\n".join(lines) + "\n")
    records = list(read_medmcqa(path, BadRecords()))
    assert [(r.answer, r.answer_text) for r in records] == [
        ("A", "Valproate"), ("B", "Ethosuximide"), ("C", "Phenytoin"), ("D", "Carbamazepine")]  # fmt: skip
    assert records[0].id == "id-1"


def test_medmcqa_zero_based_copy_is_refused_and_missing_answers_are_filtered(tmp_path):
    path = _write(tmp_path / "dev.json", _medmcqa_line(0) + "\n")
    with pytest.raises(DataError, match=r"dev\.json:1: bad gold: cop=0 is not 1\.\.4 \(0-based cop is the HF hub copy"):
        list(read_medmcqa(path, BadRecords()))
    policy = BadRecords()
    assert list(read_medmcqa(_write(tmp_path / "test.json", _medmcqa_line(None) + "\n"), policy)) == []
    assert policy.filtered == {"no released answer (cop absent)": 1}


def test_medmcqa_unicode_escapes(tmp_path):
    line = _medmcqa_line(2, question="Dose in μg is:")
    assert "\\u03bc" in line  # written with ensure_ascii, as released
    (record,) = read_medmcqa(_write(tmp_path / "train.json", line + "\n"), BadRecords())
    assert record.question == "Dose in μg is:"


# ---- PubMedQA -------------------------------------------------------------------------------
def _pqal(decision: str, year="2011"):
    return {"QUESTION": "Does X reduce Y?", "CONTEXTS": ["Background text.", "Results text."],
            "LABELS": ["BACKGROUND", "RESULTS"], "MESHES": ["Humans"], "YEAR": year,
            "reasoning_required_pred": decision, "reasoning_free_pred": decision,
            "final_decision": decision, "LONG_ANSWER": "It does."}  # fmt: skip


def test_pubmedqa_splits_by_ground_truth(tmp_path):
    ori = {"21645374": _pqal("yes"), "16418930": _pqal("maybe", None), "9488747": _pqal("no")}
    ori_path = _write(tmp_path / "data/ori_pqal.json", json.dumps(ori, indent=4))
    truth_path = _write(
        tmp_path / "data/test_ground_truth.json", json.dumps({"16418930": "maybe", "9488747": "no"}, indent=4)
    )
    test = list(read_pubmedqa(ori_path, truth_path, "test", BadRecords()))
    train = list(read_pubmedqa(ori_path, truth_path, "train", BadRecords()))
    assert [(r.id, r.answer, r.answer_text) for r in test] == [("16418930", "C", "maybe"), ("9488747", "B", "no")]
    assert [r.id for r in train] == ["21645374"]
    assert test[0].options == {"A": "yes", "B": "no", "C": "maybe"}
    assert test[1].evidence_ids == ("PMID:9488747",)
    assert test[1].context == "BACKGROUND: Background text.\nRESULTS: Results text."
    assert test[1].open_question == "Does X reduce Y?"


def test_pubmedqa_ground_truth_disagreeing_with_the_record(tmp_path):
    ori_path = _write(tmp_path / "ori_pqal.json", json.dumps({"1": _pqal("yes")}, indent=4))
    truth_path = _write(tmp_path / "test_ground_truth.json", json.dumps({"1": "no"}))
    with pytest.raises(DataError, match=r"ori_pqal\.json: PMID 1: bad gold: ground truth 'no' differs"):
        list(read_pubmedqa(ori_path, truth_path, "test", BadRecords()))


# ---- MMLU -----------------------------------------------------------------------------------
def test_mmlu_crlf_quoted_newlines_and_ids(tmp_path):
    text = (
        "Which bone is the longest?,Femur,Tibia,Humerus,Fibula,A\r\n"
        '"A man says ""ouch"".\r\nWhich nerve?",Ulnar,Radial,Median,"Axillary, posterior",C'
    )  # CRLF and no trailing newline, as clinical_knowledge_test.csv is released
    path = _write(tmp_path / "data/test/anatomy_test.csv", text)
    records = list(read_mmlu(path, "anatomy", BadRecords()))
    assert [r.id for r in records] == ["anatomy-000", "anatomy-001"]
    assert records[1].question == 'A man says "ouch".\r\nWhich nerve?'
    assert records[1].options["D"] == "Axillary, posterior" and records[1].answer_text == "Median"


def test_mmlu_bad_row_names_its_first_line(tmp_path):
    path = _write(tmp_path / "x_test.csv", 'Q1,a,b,c,d,A\n"Q2\nsecond line",a,b,c,d,Z\nQ3,a,b,c,A\n')
    with pytest.raises(DataError, match=r"x_test\.csv:2: bad gold: letter 'Z'"):
        list(read_mmlu(path, "x", BadRecords()))
    policy = BadRecords(skip=True)
    assert [r.id for r in read_mmlu(path, "x", policy)] == ["x-000"]
    assert policy.skipped == {"bad gold": 1, "bad row": 1}


# ---- BioASQ ---------------------------------------------------------------------------------
def test_bioasq_yes_no_only(tmp_path):
    questions = [
        {"id": "5a6a" + "0" * 20, "type": "yesno", "body": "Is A linked to B?", "exact_answer": "Yes",
         "documents": ["http://www.ncbi.nlm.nih.gov/pubmed/23001136", "http://www.ncbi.nlm.nih.gov/pubmed/2"],
         "ideal_answer": ["Yes."], "snippets": []},
        {"id": "5a6b" + "0" * 20, "type": "factoid", "body": "Which gene?", "exact_answer": [["BRCA1"]], "documents": []},
        {"id": "5a6c" + "0" * 20, "type": "summary", "body": "Describe X.", "documents": []},
    ]  # fmt: skip
    first = _write(tmp_path / "Task7BGoldenEnriched/7B1_golden.json", json.dumps({"questions": questions}, indent=2))
    again = _write(
        tmp_path / "Task8BGoldenEnriched/8B1_golden.json", json.dumps({"questions": questions[:1]}, indent=2)
    )
    policy = BadRecords()
    (record,) = read_bioasq([first, again], policy)
    assert (record.answer, record.answer_text, record.options) == ("A", "yes", {"A": "yes", "B": "no"})
    assert record.evidence_ids == ("PMID:23001136", "PMID:2")
    assert policy.filtered == {
        "type 'factoid' (not yesno)": 1, "type 'summary' (not yesno)": 1,
        "duplicate question id (asked in an earlier batch)": 1}  # fmt: skip


# ---- MIRAGE and RareArena -------------------------------------------------------------------
def test_mirage_subset_in_sorted_id_order(tmp_path):
    bench = {"medqa": {"0001": {"question": "Q1", "options": {"A": "a", "B": "b"}, "answer": "B"},
                       "0000": {"question": "Q0", "options": {"A": "a", "B": "b"}, "answer": "A"}},
             "pubmedqa": {"123": {"question": "Q?", "options": {"A": "yes", "B": "no", "C": "maybe"},
                                  "answer": "C", "PMID": [123]}}}  # fmt: skip
    path = _write(tmp_path / "benchmark.json", json.dumps(bench, indent=4))
    assert [(r.id, r.answer) for r in read_mirage(path, "medqa", BadRecords())] == [("0000", "A"), ("0001", "B")]
    (pub,) = read_mirage(path, "pubmedqa", BadRecords())
    assert pub.evidence_ids == ("PMID:123",) and pub.answer_text == "maybe"
    with pytest.raises(DataError, match="no dataset 'bioasq'"):
        list(read_mirage(path, "bioasq", BadRecords()))


def test_rarearena_screening_and_confirmation(tmp_path):
    row = {"_id": "30000001-1", "case_report": "A 6-year-old girl with ataxia.", "test_results": "Low vitamin E.",
           "diagnosis": "Ataxia with vitamin E deficiency", "Orpha_name": "AVED", "Orpha_id": "96",
           "age": [[6.0, "year"]], "gender": "F", "pub_date": "2019"}  # fmt: skip
    path = _write(tmp_path / "RDC.json", json.dumps(row, ensure_ascii=False) + "\n")
    (rdc,) = read_rarearena(path, True, BadRecords())
    (rds,) = read_rarearena(path, False, BadRecords())
    assert rdc.question == "A 6-year-old girl with ataxia. Low vitamin E."
    assert rds.question == "A 6-year-old girl with ataxia."
    assert (rdc.options, rdc.answer, rdc.answer_text) == ({}, "", "Ataxia with vitamin E deficiency")


# ---- finding files and the evidence map -----------------------------------------------------
def test_find_release_file_by_official_name(tmp_path):
    _write(tmp_path / "MedQA/data_clean/questions/US/test.jsonl", "x")
    _write(tmp_path / "MedQA/data_clean/questions/US/4_options/phrases_no_exclude_test.jsonl", "x")
    assert find_release_file(str(tmp_path), "US/test.jsonl").endswith("questions/US/test.jsonl")
    with pytest.raises(DataError, match="no file named 'US/dev.jsonl'"):
        find_release_file(str(tmp_path), "US/dev.jsonl")
    _write(tmp_path / "copy/US/test.jsonl", "x")
    with pytest.raises(DataError, match="2 files named 'US/test.jsonl'"):
        find_release_file(str(tmp_path), "US/test.jsonl")


def test_evidence_map_shape_is_checked(tmp_path):
    _write(tmp_path / "evidence_ids.json", json.dumps({"medqa": {"test": {"0000": ["Cardiology_3"]}}}))
    assert read_evidence_map(str(tmp_path)) == {"medqa": {"test": {"0000": ["Cardiology_3"]}}}
    _write(tmp_path / "evidence_ids.json", json.dumps({"medqa": {"test": {"0000": "Cardiology_3"}}}))
    with pytest.raises(DataError, match="medqa/test/0000: evidence ids must be a list"):
        read_evidence_map(str(tmp_path))
