"""MetricWriter: scalars and text read back from the event files, metrics.jsonl, skipped NaN /
None, and a silent writer on processes other than 0."""

from __future__ import annotations

import json
import math

import jax
import numpy as np

from medr3_jax.trainer import metrics
from medr3_jax.trainer.metrics import MetricWriter, read_scalars, read_texts

GIN = "train.steps = 3\nrl.clip_eps = 0.2\n"


def test_scalars_text_and_jsonl(tmp_path) -> None:
    with MetricWriter(tmp_path) as writer:
        writer.text(0, "config/operative", GIN, code=True)
        writer.scalars(1, {"loss/pg": 0.5, "reward/answer": np.float32(0.25), "perf/step_s": None})
        writer.scalars(2, {"loss/pg": jax.numpy.asarray(0.125), "reward/answer": math.nan, "perf/step_s": 3})
        writer.flush()
    scalars = read_scalars(tmp_path)
    assert scalars == {"loss/pg": [(1, 0.5), (2, 0.125)], "reward/answer": [(1, 0.25)], "perf/step_s": [(2, 3.0)]}

    texts = read_texts(tmp_path)
    assert list(texts) == ["config/operative"]
    step, text = texts["config/operative"][0]
    assert step == 0 and text == "    train.steps = 3\n    rl.clip_eps = 0.2"

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [
        {"step": 1, "loss/pg": 0.5, "reward/answer": 0.25},
        {"step": 2, "loss/pg": 0.125, "perf/step_s": 3.0},
    ]


def test_event_accumulator_reads_plain_text(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    with MetricWriter(tmp_path, jsonl=False) as writer:
        writer.text(5, "notes", "**hello**")
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    (event,) = acc.Tensors("notes/text_summary")
    assert event.step == 5 and event.tensor_proto.string_val == [b"**hello**"]
    assert not (tmp_path / "metrics.jsonl").exists()


def test_other_processes_write_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "is_primary", lambda: False)
    logdir = tmp_path / "tb"
    with MetricWriter(logdir) as writer:
        writer.scalars(1, {"loss/pg": 1.0})
        writer.text(1, "config", GIN)
        writer.flush()
    assert not writer.active and not logdir.exists()
