"""One error convention for every CLI (medr3_jax.cli): a missing file and a bad knob each end
in `error: ...` as the last line of stderr, naming the file or knob, exit status 2 and no
traceback; `--debug` shows the traceback instead; a usage error has the same last line."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys

import pytest

import gin
from medr3_jax import cli

MISSING = "/nonexistent/medr3"

# cli -> (a missing file: argv, what the error names), (a bad knob: argv, what the error names)
CASES = {
    "train": (
        (["--gin_file", f"{MISSING}.gin"], f"{MISSING}.gin"),
        (["--gin_file", "gin/stage3.gin", "--gin_param", "Experiment.num_steps = 'x'"],
         "Experiment.num_steps = 'x': expected an int"),
    ),
    "plan": (
        (["--gin_file", f"{MISSING}.gin"], f"{MISSING}.gin"),
        (["--gin_file", "gin/stage3.gin", "--gin_param", "Experiment.num_steps = 'x'"],
         "Experiment.num_steps = 'x': expected an int"),
    ),
    "export": (
        (["--checkpoint", MISSING, "--out", "{tmp}/out"], MISSING),
        (["--checkpoint", MISSING, "--out", "{tmp}/out", "--step", "x"], "--step"),
    ),
    "generate": (
        (["--model", MISSING, "--prompt", "hi"], MISSING),
        (["--model", "random:tiny", "--prompt", "hi", "--temperature", "-1"], "temperature"),
    ),
    "evaluate": (
        (["--model", MISSING, "--sample", "--limit", "1"], MISSING),
        (["--model", "random:tiny", "--dataset", "nope", "--sample"], "nope"),
    ),
    "data.prepare": (
        (["--dataset", "medqa", "--manual_dir", MISSING], MISSING),
        (["--dataset", "nope", "--sample"], "nope"),
    ),
    "retrieval.embed": (
        (["--corpus", MISSING, "--out", "{tmp}/out"], MISSING),
        (["--corpus", MISSING, "--out", "{tmp}/out", "--dtype", "int3"], "--dtype"),
    ),
    "retrieval.search": (
        (["--index", MISSING, "q"], MISSING),
        (["--index", MISSING, "--backend", "faiss", "q"], "--backend"),
    ),
    "rewards.score": (
        (["--in", f"{MISSING}.jsonl"], f"{MISSING}.jsonl"),
        (["--in", f"{MISSING}.jsonl", "--stage", "7"], "--stage"),
    ),
    "data.references": (
        (["--dataset", "medqa", "--sample", "--limit", "1", "--data_dir", "{tmp}", "--teacher_local", MISSING],
         MISSING),
        (["--dataset", "medqa", "--sample", "--top_k", "x"], "--top_k"),
    ),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_root_logger():
    """Each CLI's logging.basicConfig writes to this test's stderr (in-process runs: an earlier
    test's handler would hold a stream pytest has closed)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    gin.clear_config()  # train and plan parse gin in this process
    yield
    gin.clear_config()
    root.handlers[:] = saved


def _main(name: str):
    return importlib.import_module(f"medr3_jax.{name}" + (".__main__" if name == "data.references" else "")).main


def _run(capsys, name: str, argv: list[str]) -> tuple[int, str]:
    try:
        code = _main(name)(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing_file", "bad_knob"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_one_error_line_naming_the_input_and_exit_2(name, case, capsys, tmp_path):
    argv, named = CASES[name][case == "bad_knob"]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]  # nothing is written outside the test's folder
    code, err = _run(capsys, name, argv)
    last = err.strip().splitlines()[-1]
    assert code == 2, err[-2000:]
    assert last.startswith("error: ") and named in last, last
    assert "Traceback" not in err


def test_debug_shows_the_traceback_instead(capsys):
    with pytest.raises(FileNotFoundError, match=MISSING):
        _main("generate")(["--model", MISSING, "--prompt", "hi", "--debug"])


def test_error_line_is_one_line_and_types_what_is_not_an_input_error():
    assert cli.error_line(ValueError("a\n  b\n")) == "error: a; b"
    assert cli.error_line(KeyError("Experiment.nope")) == "error: Experiment.nope"
    assert cli.error_line(RuntimeError("boom")) == "error: RuntimeError: boom"


def test_a_cli_process_ends_in_the_error_line():
    """The same from a shell: `python -m medr3_jax.retrieval.search --index /missing q`."""
    done = subprocess.run([sys.executable, "-m", "medr3_jax.retrieval.search", "--index", MISSING, "q"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(f"error: {MISSING}")
