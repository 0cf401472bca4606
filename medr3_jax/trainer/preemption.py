"""Preemption: a SIGTERM (what a TPU VM gets before maintenance or preemption, and what `kill`
sends) ends the run at the next step boundary with a checkpoint, instead of losing everything
since the last periodic save.

    with PreemptionWatch() as watch:
        for step in ...:
            ...
            if watch.stop_requested(step):         # a collective: every host decides the same
                save(step, force=True); raise Preempted(step, directory)

The signal handler only sets a flag (the step in flight finishes: a half-done update is never
saved). At each step boundary every process asks whether any process got the signal (or, on a
multi-process run, whether JAX's coordination service reached a preemption sync point), so all
hosts save the same step and stop together. `python -m medr3_jax.train` then exits with status
143 (128 + SIGTERM) and says how to resume: run the same command again.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import jax

from medr3_jax.sharding.distributed import all_processes

log = logging.getLogger("medr3_jax.train")

EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143, as a shell reports a process ended by SIGTERM


class Preempted(Exception):  # noqa: N818 -- not an error: the run stopped as asked
    """The run stopped at a step boundary after a SIGTERM; its checkpoint is `step` in `directory`."""

    def __init__(self, step: int, directory: str):
        self.message = (f"preempted: stopped after step {step} with its checkpoint in {directory}; run the same "
                        "command again to resume from it")  # fmt: skip (gin appends its context to str(self))
        super().__init__(self.message)
        self.step, self.directory = step, directory


class PreemptionWatch:
    """Installs a SIGTERM handler for its lifetime (main thread only; elsewhere it only polls
    JAX's preemption notice) and answers `stop_requested(step)` the same on every process."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous = None

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested.is_set():
            log.warning("SIGTERM: finishing the step in flight, then a checkpoint and exit")
        self.requested.set()

    def stop_requested(self, step: int) -> bool:
        """True on every process when any process got SIGTERM (or JAX's preemption notice)."""
        mine = self.requested.is_set() or _jax_preemption_notice(step)
        return not all_processes(not mine)


def _jax_preemption_notice(step: int) -> bool:
    """JAX's own preemption sync point (multi-process runs whose coordination service relays the
    platform's notice); False where there is none."""
    if jax.process_count() == 1:
        return False
    try:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        return bool(multihost_utils.reached_preemption_sync_point(step))
    except Exception:  # noqa: BLE001 -- no preemption service on this runtime: our own signal only
        return False
