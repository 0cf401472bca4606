"""Progress of long waits (loading weights, evaluation, reference building, embedding, the
benchmarks) on stderr, so that a run is never silent for minutes.

    with Progress("loading weights", total=nbytes, unit="B") as bar:
        for tensor in tensors:
            ...
            bar.update(tensor.nbytes)
    for batch in progress(batches, "evaluate medqa", unit="batch"):
        ...

    with waiting("restoring the checkpoint"):            # one blocking call: elapsed time only
        restore(...)

On a terminal it is a tqdm bar that appears once the wait passes `delay_s`; elsewhere (TPU VM
logs, CI, a redirected stderr) one plain line every `every_s` seconds and a last one at the end,
only if the wait was long enough to print one. A background ticker keeps both going while
nothing is counted (a first batch that compiles, a single blocking call). Nothing at all under `--quiet` (`set_quiet`, or the
environment variable MEDR3_QUIET=1), and nothing on processes other than JAX's process 0 of a
multi-process run (every host waits for the same thing; one report is enough).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Self, TypeVar

T = TypeVar("T")

_quiet = False
# A plain line every EVERY_S seconds of a wait; a terminal's bar appears after DELAY_S (tests lower them).
EVERY_S = 10.0
DELAY_S = 2.0


def set_quiet(quiet: bool) -> None:
    """Turns progress reports off (the CLIs' `--quiet`) or back on."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet or os.environ.get("MEDR3_QUIET", "") not in ("", "0")


def _secondary_process() -> bool:
    jax = sys.modules.get("jax")  # never import jax only to ask
    try:
        return jax is not None and jax.process_count() > 1 and jax.process_index() != 0
    except Exception:  # noqa: BLE001 -- a backend not yet initialised: report
        return False


def _amount(value: float, unit: str) -> str:
    if not unit:
        return ""
    if unit == "B":
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if value >= scale:
                return f"{value / scale:.2f} {name}"
        return f"{value:.0f} B"
    return f"{value:g} {unit}"


class Progress:
    """One wait's progress (see the module doc). `total` None: counts without a percentage."""

    def __init__(
        self,
        desc: str,
        total: float | None = None,
        unit: str = "it",
        *,
        delay_s: float | None = None,
        every_s: float | None = None,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.desc, self.total, self.unit = desc, total, unit
        self.every_s = EVERY_S if every_s is None else every_s
        delay_s = DELAY_S if delay_s is None else delay_s
        self.clock = clock
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0.0
        self.start = self.last = clock()
        self.printed = False
        self.enabled = not is_quiet() and not _secondary_process()
        self._bar: Any = None
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            import tqdm  # noqa: PLC0415

            self._bar = tqdm.tqdm(total=total, desc=desc, unit=unit or "it", unit_scale=unit == "B", unit_divisor=1024,
                                  file=self.stream, delay=delay_s, dynamic_ncols=True)  # fmt: skip
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if self.enabled:
            self._ticker = threading.Thread(target=self._tick, name=f"progress:{desc}", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        """While the wait lasts: the bar's clock moves, or a line after `every_s` without one."""
        while not self._stop.wait(1.0 if self._bar is not None else min(self.every_s, 1.0)):
            with self._lock:
                if not self.enabled:
                    return
                if self._bar is not None:
                    self._bar.refresh()
                elif self.clock() - self.last >= self.every_s:
                    self.last = self.clock()
                    self._line(self.last)

    def update(self, n: float = 1) -> None:
        with self._lock:
            self.done += n
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.update(n)
                return
            now = self.clock()
            if now - self.last >= self.every_s:
                self.last = now
                self._line(now)

    def _line(self, now: float, end: bool = False) -> None:
        elapsed = now - self.start
        text = f"[medr3_jax] {self.desc}: {_amount(self.done, self.unit)}".rstrip(": ")
        if self.total:
            share = self.done / self.total
            text += f" of {_amount(self.total, self.unit)} ({100 * share:.0f}%)"
            if 0 < share < 1 and not end:
                text += f", {elapsed:.0f} s, about {elapsed * (1 - share) / share:.0f} s left"
        text += f", done in {elapsed:.0f} s" if end else ("" if self.total else f", {elapsed:.0f} s")
        if not self.unit:  # a wait without a count: "[medr3_jax] restoring: 20 s"
            text = text.replace(", ", ": ", 1)
        print(text, file=self.stream, flush=True)
        self.printed = True

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elif self.enabled and self.printed:  # a closing line only after a long wait said something
                self._line(self.clock(), end=True)
            self.enabled = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress(
    items: Iterable[T], desc: str, *, total: float | None = None, unit: str = "it", **kwargs: Any
) -> Iterator[T]:
    """Yields `items`, reporting one unit per item (`total` defaults to len(items) when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit, **kwargs) as bar:
        for item in items:
            yield item
            bar.update(1)


def waiting(desc: str, **kwargs: Any) -> Progress:
    """A wait with nothing to count (one blocking call): elapsed seconds every `every_s`."""
    return Progress(desc, None, "", **kwargs)


def add_quiet_flag(parser: Any) -> None:
    """`--quiet` on a CLI's argparse parser; the CLI then calls `set_quiet(args.quiet)`."""
    parser.add_argument("--quiet", action="store_true", help="no progress reports on stderr (also MEDR3_QUIET=1)")
