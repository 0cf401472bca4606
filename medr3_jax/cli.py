"""The one convention of every command line entry point (train, plan, export, generate, evaluate,
prepare, embed, search, score, references): bad input ends in one line on stderr,
`error: <what, naming the file/line/flag/knob>`, and exit status 2, with no traceback unless
`--debug` (or MEDR3_DEBUG=1); Ctrl-C ends with status 130.

    @entry_point
    def main(argv: Sequence[str] | None = None) -> int:
        args = ArgumentParser(prog="python -m medr3_jax.x").parse_args(argv)   # has --quiet, --debug
        ...

`ArgumentParser` adds `--quiet` (no progress reports, `medr3_jax.progress`) and `--debug` to
every CLI and reports its own usage errors in the same form.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from medr3_jax.progress import set_quiet

log = logging.getLogger("medr3_jax.cli")

# Errors that are the input's fault: their message is the whole story (it names the file, flag or
# knob). Anything else is shown with its type, and --debug shows where it came from.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError, LookupError, ImportError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with `--quiet` and `--debug` on every CLI; a usage error prints the usage, then
    `error: <message>` as the last line, and exits 2."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.add_argument("--quiet", action="store_true", help="no progress reports on stderr (also MEDR3_QUIET=1)")
        self.add_argument("--debug", action="store_true", help="a traceback with an error (also MEDR3_DEBUG=1)")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        set_quiet(parsed.quiet)
        return parsed

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message}\n")


def error_line(err: BaseException) -> str:
    """`error: ...` on one line: the message of an input error as it is, any other exception
    with its type; several lines are joined with "; "."""
    text = str(err) if isinstance(err, INPUT_ERRORS) else f"{type(err).__name__}: {err}"
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]  # not the repr KeyError's str() gives
    return "error: " + (one_line(text) or type(err).__name__)


def one_line(text: str) -> str:
    """`text`'s non-empty lines, stripped and joined with "; " (gin adds context lines to errors)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _debug(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("MEDR3_DEBUG", "") not in ("", "0")


def entry_point(main: Callable[..., int]) -> Callable[..., int]:
    """Wraps a CLI's `main(argv) -> int` in the convention above (argparse's own exits pass)."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr, flush=True)
            return 130
        except Exception as err:
            if _debug(args):
                raise
            for handler in logging.getLogger().handlers:  # what the run logged comes before the error line
                try:
                    handler.flush()
                except (OSError, ValueError):  # a stream already closed
                    pass
            print(error_line(err), file=sys.stderr, flush=True)
            return 2

    return wrapper
