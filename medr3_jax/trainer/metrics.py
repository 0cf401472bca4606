"""TensorBoard metrics without TensorFlow (tensorboardX), plus a `metrics.jsonl` beside them.

    writer = MetricWriter(f"{workdir}/tb")
    writer.text(0, "config/operative", gin_text, code=True)
    writer.scalars(step, {"loss/pg": 0.12, "reward/answer": 0.5, "perf/step_s": 3.1})
    writer.close()
    read_scalars(f"{workdir}/tb")   # {"loss/pg": [(step, 0.12)], ...}

Only process 0 writes; on other processes every method is a no-op, so callers need no
`if is_primary()`. Metric names are flat with one prefix per room (`rollout/`, `reward/`,
`loss/`, `retrieval/`, `perf/`).

A remote logdir (`gs://...`, any fsspec URL): tensorboardX writes local files only (gs:// needs
google-cloud-storage and re-uploads the whole file anyway) and object stores cannot append, so
the event files and metrics.jsonl are written into a local mirror (`fileio.LocalMirror`, a
temporary folder) and uploaded whole every `sync_secs` (at the next `scalars` call), on `flush`
and on `close`; a resumed run first downloads the metrics.jsonl already there and appends to it.
TensorBoard reads the remote event files directly (its fsspec support); `read_scalars` too.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Mapping

from medr3_jax import fileio
from medr3_jax.sharding.distributed import is_primary

log = logging.getLogger(__name__)

JSONL_NAME = "metrics.jsonl"


def _as_float(value: Any) -> float | None:
    """A finite float, or None for None / NaN / inf / anything that is not one number."""
    if value is None:
        return None
    try:
        out = float(value)  # python, numpy and 0-d jax scalars
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def as_code_block(text: str) -> str:
    """Markdown code block (4-space indent: TensorBoard's text plugin renders it verbatim)."""
    return "\n".join("    " + line for line in text.splitlines())


class MetricWriter:
    """Scalars and text to TensorBoard event files in `logdir` and one JSON line per
    `scalars` call to `<logdir>/metrics.jsonl`. Process 0 only; elsewhere a no-op. A URL logdir
    is written through a local mirror, uploaded every `sync_secs` and at flush / close."""

    def __init__(self, logdir: str | os.PathLike[str], *, jsonl: bool = True, sync_secs: float = 30.0):
        self.logdir = os.fspath(logdir)
        self.active = is_primary()
        self.sync_secs = sync_secs
        self._writer = None
        self._jsonl = None
        self._mirror: fileio.LocalMirror | None = None
        self.write_failures = 0  # metrics lines that could not be written (logged, never fatal)
        self._synced = time.monotonic()
        if not self.active:
            return
        from tensorboardX import SummaryWriter  # noqa: PLC0415

        fileio.check(self.logdir, knob="MetricWriter logdir")
        self._mirror = fileio.LocalMirror(self.logdir)
        if self._mirror.remote:
            self._mirror.pull(JSONL_NAME)  # a resumed run appends to the rows already there
            log.info("TensorBoard and %s of %s are written in %s and uploaded every %.0f s and at the end",
                     JSONL_NAME, self.logdir, self._mirror.local, sync_secs)  # fmt: skip
        else:
            os.makedirs(self.logdir, exist_ok=True)
        # tensorboardX names event files by the second and host; an upload replaces a remote file of
        # the same name, so remote ones get a nanosecond suffix (names still sort by time)
        suffix = f".{time.time_ns()}" if self._mirror.remote else ""
        self._writer = SummaryWriter(logdir=self._mirror.local, flush_secs=30, filename_suffix=suffix)
        if jsonl:
            self._jsonl = open(os.path.join(self._mirror.local, JSONL_NAME), "a", encoding="utf-8")  # noqa: SIM115

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Logs each finite value under its name; None / NaN / inf are skipped (debug log)."""
        if self._writer is None:
            return
        kept: dict[str, float] = {}
        for name, value in values.items():
            number = _as_float(value)
            if number is None:
                log.debug("step %d: skipping metric %s=%r (not a finite number)", step, name, value)
                continue
            kept[name] = number
            self._writer.add_scalar(name, number, global_step=int(step))
        if self._jsonl is not None:
            try:
                self._jsonl.write(json.dumps({"step": int(step), **kept}) + "\n")
                self._jsonl.flush()
            except OSError as err:  # a full disk: the run goes on (its checkpoints say whether it may)
                self.write_failures += 1
                log.warning("%s: metrics of step %d not written (%s); training goes on (%d such failures)",
                            os.path.join(self.logdir, JSONL_NAME), step, err, self.write_failures)  # fmt: skip
        if self._mirror is not None and self._mirror.remote and time.monotonic() - self._synced >= self.sync_secs:
            try:
                self.flush()
            except OSError as err:
                self.write_failures += 1
                log.warning("%s: upload failed (%s); tried again at the next sync", self.logdir, err)

    def text(self, step: int, tag: str, text: str, *, code: bool = False) -> None:
        """A text summary (markdown); `code=True` shows it verbatim, e.g. the operative gin config."""
        if self._writer is None:
            return
        self._writer.add_text(tag, as_code_block(text) if code else text, global_step=int(step))

    def flush(self) -> None:
        """Writes out what is buffered; a remote logdir's changed files are uploaded."""
        if self._writer is not None:
            self._writer.flush()
        if self._jsonl is not None:
            self._jsonl.flush()
        self._upload()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._mirror is not None:
            self._upload()
            self._mirror.close()
            self._mirror = None

    def _upload(self) -> None:
        if self._mirror is not None and self._mirror.remote:
            self._mirror.push()
            self._synced = time.monotonic()


def _accumulator(logdir: str | os.PathLike[str]) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    acc = EventAccumulator(os.fspath(logdir), size_guidance={"scalars": 0, "tensors": 0})  # 0 = keep all
    acc.Reload()
    return acc


def read_scalars(logdir: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in the event files of `logdir`."""
    acc = _accumulator(logdir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_texts(logdir: str | os.PathLike[str]) -> dict[str, list[tuple[int, str]]]:
    """{tag: [(step, markdown), ...]} of the text summaries (tensorboardX adds '/text_summary'
    to a tag; it is stripped here)."""
    acc = _accumulator(logdir)
    out: dict[str, list[tuple[int, str]]] = {}
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        name = tag.removesuffix("/text_summary")
        out[name] = [(e.step, b"".join(e.tensor_proto.string_val).decode("utf-8")) for e in events]
    return out
