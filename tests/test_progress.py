"""Progress of long waits (medr3_jax.progress): plain lines every EVERY_S off a terminal with the
count, share and remaining time; a tqdm bar on one; a ticker for waits with nothing to count;
nothing for a short wait, under --quiet / MEDR3_QUIET, or on a secondary process; and the weight
loader reports the bytes it has placed."""

from __future__ import annotations

import io
import re
import time

import jax
import numpy as np
import pytest
from flax import nnx

from medr3_jax import progress as P
from medr3_jax.models.config import PRESETS
from medr3_jax.models.hf import SafetensorsDir, load_decoder, save_hf
from medr3_jax.models.transformer import Decoder


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _loud(monkeypatch):
    monkeypatch.delenv("MEDR3_QUIET", raising=False)
    P.set_quiet(False)
    yield
    P.set_quiet(False)


def test_lines_count_share_and_what_is_left_then_a_last_line():
    stream, now = io.StringIO(), [0.0]
    with P.Progress("loading", total=4 * 2**20, unit="B", every_s=10, stream=stream, clock=lambda: now[0]) as bar:
        for _ in range(4):
            now[0] += 6.0
            bar.update(2**20)
    # updates at 6, 12, 18, 24 s: a line at 12 (>= 10 s after the start) and at 24, then the last
    assert stream.getvalue().splitlines() == [
        "[medr3_jax] loading: 2.00 MiB of 4.00 MiB (50%), 12 s, about 12 s left",
        "[medr3_jax] loading: 4.00 MiB of 4.00 MiB (100%)",
        "[medr3_jax] loading: 4.00 MiB of 4.00 MiB (100%), done in 24 s",
    ]


def test_a_short_wait_prints_nothing_and_progress_yields_every_item():
    stream = io.StringIO()
    assert list(P.progress(range(5), "quick", stream=stream)) == [0, 1, 2, 3, 4]
    assert stream.getvalue() == ""


def test_waiting_ticks_while_a_call_blocks():
    stream = io.StringIO()
    with P.waiting("restoring", every_s=0.1, stream=stream):
        time.sleep(0.45)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(re.fullmatch(r"\[medr3_jax\] restoring: \d+ s", line) for line in lines[:-1])
    assert re.fullmatch(r"\[medr3_jax\] restoring: done in \d+ s", lines[-1])
    time.sleep(0.25)  # the ticker stopped with the wait
    assert len(stream.getvalue().splitlines()) == len(lines)


def test_a_terminal_gets_a_tqdm_bar():
    stream = Terminal()
    with P.Progress("embedding", total=10, unit="passages", delay_s=0, stream=stream) as bar:
        bar.update(10)
    assert "embedding" in stream.getvalue() and "10/10" in stream.getvalue()


@pytest.mark.parametrize("how", ["flag", "env", "secondary"])
def test_quiet_and_secondary_processes_print_nothing(how, monkeypatch):
    if how == "flag":
        P.set_quiet(True)
    elif how == "env":
        monkeypatch.setenv("MEDR3_QUIET", "1")
    else:
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda: 1)
    stream = io.StringIO()
    with P.Progress("x", total=3, every_s=0, stream=stream) as bar:
        bar.update(3)
    with P.waiting("y", every_s=0.05, stream=stream):
        time.sleep(0.15)
    assert stream.getvalue() == ""


def test_the_weight_loader_reports_the_bytes_it_placed(tmp_path, monkeypatch, capsys):
    config = PRESETS["tiny"].replace(param_dtype="float32", compute_dtype="float32")
    save_hf(Decoder(config, rngs=nnx.Rngs(0)), tmp_path)
    total = config.num_params * 4
    monkeypatch.setattr(P, "EVERY_S", 0.0)  # a line at every tensor
    load_decoder(SafetensorsDir(str(tmp_path)), config)
    err = capsys.readouterr().err
    amounts = [float(m) for m in re.findall(r"loading weights \(float32\): ([\d.]+) (?:KiB|MiB)", err)]
    assert amounts and np.all(np.diff(amounts) >= 0)
    assert f"({100}%), done in" in err and P._amount(total, "B") in err
    P.set_quiet(True)
    load_decoder(SafetensorsDir(str(tmp_path)), config)
    assert "loading weights" not in capsys.readouterr().err


CLIS = ("train", "evaluate", "export", "generate", "plan", "rewards.score", "retrieval.embed", "retrieval.search",
        "data.prepare", "data.references")  # fmt: skip


@pytest.mark.parametrize("cli", CLIS)
def test_every_cli_has_quiet(cli, capsys):
    import importlib  # noqa: PLC0415

    module = importlib.import_module(f"medr3_jax.{cli}" + (".__main__" if cli == "data.references" else ""))
    with pytest.raises(SystemExit) as stop:
        (module._parse if hasattr(module, "_parse") else module.main)(["--help"])
    assert stop.value.code == 0 and "--quiet" in capsys.readouterr().out
