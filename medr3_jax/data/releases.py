"""Readers of the official raw releases of the medical QA benchmarks, as distributed.

Each reader takes the release's own files (found by their official names, see
`find_release_file`) and yields `QARecord`s; a malformed record goes to `BadRecords`, which
raises a `DataError` naming file and line (or key), or skips and counts it. The formats, as
measured on the real files, are in DATA_FORMATS.md; the quirks that matter are noted inline.
"""

from __future__ import annotations

import csv
import json
import os
import re
from typing import Any, Iterator, Mapping

from medr3_jax.data.records import LETTERS, BadRecords, DataError, QARecord

MMLU_MED_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
YES_NO_MAYBE = ("yes", "no", "maybe")
EVIDENCE_MAP_NAME = "evidence_ids.json"  # our addition, see read_evidence_map
EvidenceMap = dict[str, dict[str, dict[str, list[str]]]]


# ---- finding files --------------------------------------------------------------------------
def find_release_files(manual_dir: str, pattern: str) -> list[str]:
    """Files under `manual_dir` (recursively) whose path ends with `pattern` (a regex over the
    '/'-separated path tail), sorted."""
    if not os.path.isdir(manual_dir):
        raise DataError(f"{manual_dir}: manual directory does not exist")
    tail = re.compile(rf"(^|/){pattern}$")
    found = []
    for root, _, files in os.walk(manual_dir, followlinks=True):
        for name in files:
            path = os.path.join(root, name)
            if tail.search(os.path.relpath(path, manual_dir).replace(os.sep, "/")):
                found.append(path)
    return sorted(found)


def find_release_file(manual_dir: str, name: str, *, required: bool = True) -> str | None:
    """The one file under `manual_dir` whose path ends with `name` (e.g. 'US/test.jsonl')."""
    found = find_release_files(manual_dir, re.escape(name))
    if len(found) > 1:
        raise DataError(f"{manual_dir}: {len(found)} files named {name!r} ({', '.join(found)}); keep one release")
    if not found:
        if required:
            raise DataError(f"{manual_dir}: no file named {name!r} in the manual directory (see docs/DATA.md)")
        return None
    return found[0]


def read_evidence_map(manual_dir: str) -> EvidenceMap:
    """`evidence_ids.json` anywhere under `manual_dir`, or {} when there is none.

    Our addition to the official releases: gold passage ids per record, for datasets whose
    release has none (MedQA, MedMCQA, MMLU), as `{dataset: {split: {record id: [ids]}}}`.
    """
    path = find_release_file(manual_dir, EVIDENCE_MAP_NAME, required=False)
    if path is None:
        return {}
    data = _load_json(path)
    shape = "{dataset: {split: {record id: [passage ids]}}}"
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected {shape}")
    for dataset, splits in data.items():
        if not isinstance(splits, dict) or not all(isinstance(t, dict) for t in splits.values()):
            raise DataError(f"{path}: {dataset}: expected {shape}")
        for split, table in splits.items():
            for rid, ids in table.items():
                if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                    raise DataError(
                        f"{path}: {dataset}/{split}/{rid}: evidence ids must be a list of non-empty strings"
                    )
    return data


# ---- shared helpers -------------------------------------------------------------------------
def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if not text.strip():
        raise DataError(f"{path}: empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from err


def _json_lines(path: str, bad: BadRecords) -> Iterator[tuple[int, int, dict]]:
    """(record index, line number, object) for each line; a trailing newline is allowed."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"{path}: empty file")
    for line_no, line in enumerate(lines, 1):
        where = f"{path}:{line_no}"
        if not line.strip():
            bad.handle(where, "empty line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            bad.handle(where, f"not valid JSON: {err.msg} at column {err.colno}")
            continue
        if not isinstance(obj, dict):
            bad.handle(where, f"not a JSON object: {type(obj).__name__}")
            continue
        yield line_no - 1, line_no, obj


def _text_field(obj: Mapping, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"missing field: {key!r} absent, empty or not a string")
    return value.strip()


def _options(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not raw:
        raise DataError("missing field: 'options' absent or not an object")
    letters = sorted(raw)
    if letters != list(LETTERS[: len(letters)]):
        raise DataError(f"bad options: letters {letters} are not A, B, C, ...")
    if not all(isinstance(raw[k], str) and raw[k].strip() for k in letters):
        raise DataError("bad options: an option text is empty or not a string")
    return {k: raw[k].strip() for k in letters}


def _choice(options: Mapping[str, str], letter: Any) -> tuple[str, str]:
    if letter not in options:
        raise DataError(f"bad gold: letter {letter!r} is not among the options {list(options)}")
    return letter, options[letter]


def _pmid_ids(values: Any) -> tuple[str, ...]:
    """PMIDs (ints, digit strings or PubMed URLs) -> MedRAG passage ids 'PMID:<n>'."""
    out = []
    for value in values or ():
        match = re.search(r"(\d+)\s*$", str(value))
        if match is None:
            raise DataError(f"bad evidence: {value!r} holds no PMID")
        out.append(f"PMID:{int(match.group(1))}")
    return tuple(dict.fromkeys(out))


def _guarded(bad: BadRecords, where: str, make) -> QARecord | None:
    try:
        return make()
    except DataError as err:
        bad.handle(where, str(err))
        return None


# ---- MedQA (USMLE) --------------------------------------------------------------------------
def read_medqa(path: str, bad: BadRecords, dataset: str = "medqa") -> Iterator[QARecord]:
    """`US/{split}.jsonl` (5 options) or `US/4_options/phrases_no_exclude_{split}.jsonl`.

    There is no id field: as in MIRAGE, the id is the 0-based line index padded to 4 digits.
    `answer` (the gold text) must equal `options[answer_idx]`.
    """
    for index, line_no, obj in _json_lines(path, bad):

        def make(obj=obj, index=index) -> QARecord:
            options = _options(obj.get("options"))
            letter, text = _choice(options, obj.get("answer_idx"))
            if isinstance(obj.get("answer"), str) and obj["answer"].strip() != text:
                raise DataError(f"bad gold: 'answer' {obj['answer']!r} differs from options[{letter!r}] {text!r}")
            q = _text_field(obj, "question")
            return QARecord(
                id=f"{index:04d}", dataset=dataset, question=q, options=options, answer=letter, answer_text=text
            )

        if (record := _guarded(bad, f"{path}:{line_no}", make)) is not None:
            yield record


# ---- MedMCQA --------------------------------------------------------------------------------
def read_medmcqa(path: str, bad: BadRecords, dataset: str = "medmcqa") -> Iterator[QARecord]:
    """`train.json` / `dev.json`: JSON Lines despite the name. `cop` is 1-based (1 = opa) in the
    official release; the HF hub copy is 0-based and is refused (cop 0 names it). Records with
    no `cop` at all (the unreleased test answers) are counted as filtered, not bad."""
    for _, line_no, obj in _json_lines(path, bad):
        if "cop" not in obj or obj["cop"] is None:
            bad.filter("no released answer (cop absent)")
            continue

        def make(obj=obj) -> QARecord:
            options = {letter: obj.get(key) for letter, key in zip("ABCD", ("opa", "opb", "opc", "opd"))}
            options = _options(options)
            cop = obj["cop"]
            if not isinstance(cop, int) or isinstance(cop, bool) or not 1 <= cop <= 4:
                hint = " (0-based cop is the HF hub copy; use the official release)" if cop == 0 else ""
                raise DataError(f"bad gold: cop={cop!r} is not 1..4{hint}")
            letter, text = _choice(options, "ABCD"[cop - 1])
            rid = _text_field(obj, "id")
            return QARecord(
                id=rid,
                dataset=dataset,
                question=_text_field(obj, "question"),
                options=options,
                answer=letter,
                answer_text=text,
            )

        if (record := _guarded(bad, f"{path}:{line_no}", make)) is not None:
            yield record


# ---- PubMedQA (PQA-L) -----------------------------------------------------------------------
def read_pubmedqa(
    ori_pqal: str, test_ground_truth: str, split: str, bad: BadRecords, dataset: str = "pubmedqa"
) -> Iterator[QARecord]:
    """`ori_pqal.json` (PMID -> record) with `test_ground_truth.json` (the 500 test PMIDs).

    split "test" = the ground-truth PMIDs, "train" = the rest. Options are MIRAGE's
    PubMedQA*: A yes, B no, C maybe; the abstract goes to `context` (PubMedQA* drops it).
    """
    records, truth = _load_json(ori_pqal), _load_json(test_ground_truth)
    if not isinstance(records, dict) or not isinstance(truth, dict):
        raise DataError(f"{ori_pqal} / {test_ground_truth}: expected JSON objects keyed by PMID")
    missing = sorted(set(truth) - set(records))
    if missing:
        raise DataError(f"{test_ground_truth}: {len(missing)} PMIDs not in {ori_pqal}, e.g. {missing[:3]}")
    keys = [k for k in records if (k in truth) == (split == "test")]
    for pmid in keys:
        obj = records[pmid]

        def make(obj=obj, pmid=pmid) -> QARecord:
            if not isinstance(obj, dict):
                raise DataError("not a JSON object")
            decision = obj.get("final_decision")
            if decision not in YES_NO_MAYBE:
                raise DataError(f"bad gold: final_decision {decision!r} is not yes/no/maybe")
            if pmid in truth and truth[pmid] != decision:
                raise DataError(f"bad gold: ground truth {truth[pmid]!r} differs from final_decision {decision!r}")
            contexts, labels = obj.get("CONTEXTS"), obj.get("LABELS") or []
            if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
                raise DataError("missing field: 'CONTEXTS' absent or not a list of strings")
            context = "\n".join(f"{lab}: {c}" if lab else c for lab, c in zip(labels + [""] * len(contexts), contexts))
            question = _text_field(obj, "QUESTION")
            options = dict(zip("ABC", YES_NO_MAYBE))
            letter = "ABC"[YES_NO_MAYBE.index(decision)]
            return QARecord(
                id=pmid,
                dataset=dataset,
                question=question,
                options=options,
                answer=letter,
                answer_text=decision,
                open_question=question,
                context=context,
                evidence_ids=_pmid_ids([pmid]),
            )

        if (record := _guarded(bad, f"{ori_pqal}: PMID {pmid}", make)) is not None:
            yield record


# ---- MMLU (six medical subjects) ------------------------------------------------------------
def read_mmlu(path: str, subject: str, bad: BadRecords, dataset: str = "mmlu") -> Iterator[QARecord]:
    """`<subject>_{dev,val,test}.csv`: headerless `question,A,B,C,D,answer`, RFC-4180 quoting
    with embedded newlines, LF or CRLF. Ids as MIRAGE: `<subject>-<row:03d>`."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader, first_line = csv.reader(fh), 1
        for row_index, row in enumerate(reader):
            where, first_line = f"{path}:{first_line}", reader.line_num + 1  # a row may span lines

            def make(row=row, row_index=row_index) -> QARecord:
                if len(row) != 6:
                    raise DataError(f"bad row: {len(row)} columns, expected 6 (question, A, B, C, D, answer)")
                options = _options(dict(zip("ABCD", row[1:5])))
                letter, text = _choice(options, row[5].strip())
                if not row[0].strip():
                    raise DataError("missing field: empty question")
                return QARecord(
                    id=f"{subject}-{row_index:03d}",
                    dataset=dataset,
                    question=row[0].strip(),
                    options=options,
                    answer=letter,
                    answer_text=text,
                )

            if (record := _guarded(bad, where, make)) is not None:
                yield record
    if first_line == 1:
        raise DataError(f"{path}: empty file")


# ---- BioASQ Task B (yes/no) -----------------------------------------------------------------
def read_bioasq(paths: list[str], bad: BadRecords, dataset: str = "bioasq") -> Iterator[QARecord]:
    """Golden files `{"questions": [...]}`; yes/no questions only (others counted as filtered);
    `exact_answer` compared case-insensitively (one real answer is "Yes"). Evidence = the
    `documents` PMIDs. A question id seen in an earlier batch is filtered as a duplicate."""
    seen: set[str] = set()
    for path in paths:
        data = _load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
            raise DataError(f"{path}: expected an object with a 'questions' list")
        for i, obj in enumerate(data["questions"]):
            if isinstance(obj, dict) and obj.get("type") != "yesno":
                bad.filter(f"type {obj.get('type')!r} (not yesno)")
                continue

            def make(obj=obj) -> QARecord:
                if not isinstance(obj, dict):
                    raise DataError("not a JSON object")
                answer = obj.get("exact_answer")
                if not isinstance(answer, str) or answer.strip().lower() not in ("yes", "no"):
                    raise DataError(f"bad gold: exact_answer {answer!r} is not 'yes' or 'no'")
                answer = answer.strip().lower()
                body = _text_field(obj, "body")
                return QARecord(
                    id=_text_field(obj, "id"),
                    dataset=dataset,
                    question=body,
                    options={"A": "yes", "B": "no"},
                    answer="A" if answer == "yes" else "B",
                    answer_text=answer,
                    open_question=body,
                    evidence_ids=_pmid_ids(obj.get("documents")),
                )

            record = _guarded(bad, f"{path}: questions[{i}]", make)
            if record is None:
                continue
            if record.id in seen:
                bad.filter("duplicate question id (asked in an earlier batch)")
                continue
            seen.add(record.id)
            yield record


# ---- MIRAGE benchmark.json ------------------------------------------------------------------
MIRAGE_DATASETS = ("medqa", "medmcqa", "pubmedqa", "bioasq", "mmlu")


def read_mirage(path: str, subset: str, bad: BadRecords) -> Iterator[QARecord]:
    """One of the five subsets of `benchmark.json`, ids in MIRAGE's order (`sorted(keys)`)."""
    data = _load_json(path)
    if not isinstance(data, dict) or subset not in data:
        raise DataError(f"{path}: no dataset {subset!r} (expected the keys {list(MIRAGE_DATASETS)})")
    for rid in sorted(data[subset]):
        obj = data[subset][rid]

        def make(obj=obj, rid=rid) -> QARecord:
            if not isinstance(obj, dict):
                raise DataError("not a JSON object")
            options = _options(obj.get("options"))
            letter, text = _choice(options, obj.get("answer"))
            question = _text_field(obj, "question")
            open_question = question if subset in ("pubmedqa", "bioasq") else ""
            return QARecord(
                id=rid,
                dataset=subset,
                question=question,
                options=options,
                answer=letter,
                answer_text=text,
                open_question=open_question,
                evidence_ids=_pmid_ids(obj.get("PMID")),
            )

        if (record := _guarded(bad, f"{path}: {subset}/{rid}", make)) is not None:
            yield record


# ---- RareArena ------------------------------------------------------------------------------
def read_rarearena(
    path: str, with_test_results: bool, bad: BadRecords, dataset: str = "rarearena"
) -> Iterator[QARecord]:
    """`RDS.json` / `RDC.json`: JSON Lines; the input is `case_report` (RDS) or
    `case_report + ' ' + test_results` (RDC); the gold is the free-text `diagnosis`."""
    for _, line_no, obj in _json_lines(path, bad):

        def make(obj=obj) -> QARecord:
            case = _text_field(obj, "case_report")
            if with_test_results:
                case = case + " " + _text_field(obj, "test_results")
            return QARecord(
                id=_text_field(obj, "_id"),
                dataset=dataset,
                question=case,
                answer_text=_text_field(obj, "diagnosis"),
                open_question=case,
            )

        if (record := _guarded(bad, f"{path}:{line_no}", make)) is not None:
            yield record
