"""Shared command-line plumbing: flag helpers, value parsers, logging, exit codes.

Nothing here imports Keras (the commands parse their arguments and select the backend first).

Exit codes of every command: 0 success; 2 bad usage, bad data, bad bundle or bad configuration
(one line on stderr, no traceback unless ``--verbose``); 3 valid input but the run failed
(:class:`ptycho_k3.errors.RunFailure`, e.g. training diverged; one line; a run stopped by
SIGINT / SIGTERM exits 130 / 143); 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ptycho_k3 import logs
from ptycho_k3.config_io import LEGACY_IGNORED, UNSET
from ptycho_k3.errors import RunFailure
from ptycho_k3.logs import LOGGER_NAME, add_log_file, close_log_files

__all__ = ["LOGGER_NAME", "add_log_file", "close_log_files"]  # re-exported for the commands

#: Torch-only / legacy names that keep their hyphenated spelling as the canonical one.
_HYPHEN_CANONICAL = ("torch_",)


class UsageError(Exception):
    """A bad argument; reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise :class:`UsageError` instead of printing usage."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def flag_names(name: str) -> list[str]:
    """``--name`` plus the hyphenated alias (``--n_groups`` and ``--n-groups``)."""
    flags = [f"--{name}"]
    if "_" in name:
        hyphen = f"--{name.replace('_', '-')}"
        # The original spelled its torch execution group with hyphens: list that one first.
        flags = [hyphen, *flags] if name.startswith(_HYPHEN_CANONICAL) else [*flags, hyphen]
    return flags


def add_flag(parser: argparse.ArgumentParser | Any, name: str, **kwargs: Any) -> None:
    """Add ``--name`` and its hyphenated alias, storing into ``dest=name``."""
    parser.add_argument(*flag_names(name), dest=name, **kwargs)


# ------------------------------------------------------------------------------------------
# value parsers (argparse ``type=``): they raise ArgumentTypeError with the reason


_TRUE = {"true", "yes", "1", "on", "y", "t"}
_FALSE = {"false", "no", "0", "off", "n", "f"}


def parse_bool(text: str) -> bool:
    """``true/false/yes/no/1/0`` (any case; also on/off) -> bool."""
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false/yes/no/1/0, got {text!r}")


def _is_none(text: str) -> bool:
    return str(text).strip().lower() in ("none", "null", "")


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        if kind is int:  # accept "1e3" or "512.0" for an integer when it is one
            try:
                f = float(text)
            except ValueError:
                f = float("nan")
            if f == f and f == int(f) and abs(f) < 2**62:
                return int(f)
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and value != value:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def integer(text: str) -> int:
    return _number(text, int, "an integer")


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def number(text: str) -> float:
    return _number(text, float, "a number")


def positive_number(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float, "a number > 0")
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def optional_int(text: str) -> int | None:
    """An integer or ``none``."""
    return None if _is_none(text) else positive_int(text)


def optional_integer(text: str) -> int | None:
    """Any integer or ``none``."""
    return None if _is_none(text) else integer(text)


def optional_non_negative_int(text: str) -> int | None:
    """An integer >= 0 or ``none``."""
    return None if _is_none(text) else non_negative_int(text)


def optional_text(text: str) -> str | None:
    """A string, or ``none`` / empty for None."""
    return None if _is_none(text) else text


def optional_number(text: str) -> float | None:
    """A number or ``none``."""
    return None if _is_none(text) else number(text)


def loose(text: str) -> Any:
    """Best-effort value of a legacy flag we only compare with its default."""
    if _is_none(text):
        return None
    low = str(text).strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def add_bool(parser: argparse.ArgumentParser | Any, name: str, help: str,
             default: Any = UNSET) -> None:
    """``--name [true|false|yes|no|1|0]`` (bare = true) and ``--no-name`` (= false)."""
    add_flag(parser, name, type=parse_bool, nargs="?", const=True, default=default,
             metavar="BOOL", help=help)
    negatives = [f"--no-{name}"]
    if "_" in name:
        negatives.append(f"--no-{name.replace('_', '-')}")
    parser.add_argument(*negatives, dest=name, action="store_const", const=False,
                        default=default, help=argparse.SUPPRESS)


def add_legacy_ignored(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Accept the original's unimplemented flags so old command lines parse (warned when set)."""
    group = parser.add_argument_group(
        "accepted for compatibility (the original's torch-only options; ignored, with a warning)")
    for name in names:
        add_flag(group, name, type=loose, nargs="?", const=True, default=UNSET,
                 help=argparse.SUPPRESS if name.startswith("torch_recon") else
                 f"ignored (original default {LEGACY_IGNORED[name]!r})")


def add_common(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--quiet``, ``--verbose``, ``--console-level``."""
    from ptycho_k3.backend import CHOICES

    add_flag(parser, "backend", default=None, metavar="{" + ",".join(CHOICES) + "}",
             help="Keras backend (pytorch = torch); default $KERAS_BACKEND, else tensorflow")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="only warnings and errors; no progress bars")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="debug logging, and a traceback on errors")
    parser.add_argument("--console-level", "--console_level", dest="console_level",
                        default=None, type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                        help="console log level (default INFO; --quiet = WARNING)")


# ------------------------------------------------------------------------------------------
# logging


def select_backend(flag: str | None) -> str:
    """Pick and activate this command's backend (flag > KERAS_BACKEND > default) before Keras is
    imported, and keep Keras from importing the other frameworks (one backend a process)."""
    from ptycho_k3.backend import select, skip_unused_frameworks

    backend = select(flag)
    skip_unused_frameworks(backend)
    return backend


def setup_logging(prog: str, args: argparse.Namespace) -> logging.Logger:
    """Console logging on stderr at the level the flags ask for (:func:`ptycho_k3.logs.setup`);
    returns the command's logger."""
    level = args.console_level or ("DEBUG" if args.verbose else
                                   "WARNING" if args.quiet else "INFO")
    return logs.setup(prog, level)


def quiet_frameworks() -> None:
    """Silence TensorFlow's C++ start-up chatter (must run before TensorFlow is imported).

    Logging only: settings that change speed or numerics are :mod:`ptycho_k3.backend`'s.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def progress_verbosity(args: argparse.Namespace) -> int:
    """Keras ``verbose``: 0 quiet, 1 progress bar on a terminal, 2 one line per epoch."""
    if args.quiet:
        return 0
    return 1 if sys.stderr.isatty() or sys.stdout.isatty() else 2


# ------------------------------------------------------------------------------------------
# exit codes


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (exit 2). Imported lazily: none of them needs Keras."""
    from ptycho_k3.backend import BackendError
    from ptycho_k3.bundle import BundleError
    from ptycho_k3.config import ConfigError
    from ptycho_k3.data import DataError
    from ptycho_k3.errors import CheckpointError

    return (UsageError, BackendError, BundleError, ConfigError, DataError, CheckpointError)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def run_main(prog: str, body: Callable[[argparse.Namespace], int],
             parse: Callable[[Sequence[str] | None], argparse.Namespace],
             argv: Sequence[str] | None) -> int:
    """Parse, run ``body`` and map exceptions to exit codes with one line on stderr."""
    verbose = "--verbose" in (argv if argv is not None else sys.argv[1:]) or \
        "-v" in (argv if argv is not None else sys.argv[1:])
    user_errors = user_error_types()
    saved = _logging_state()
    try:
        args = parse(argv)
        verbose = args.verbose
        return body(args)
    except user_errors as exc:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except RunFailure as exc:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: failed: {one_line(exc)}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 3))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last resort of a command
        if verbose:
            traceback.print_exc()
        print(f"{prog}: unexpected error: {type(exc).__name__}: {one_line(exc)} "
              "(run with --verbose for the traceback)", file=sys.stderr)
        return 1
    finally:
        close_log_files()
        _restore_logging(saved)


def _logging_state() -> dict[str, tuple[list[logging.Handler], bool, int]]:
    """Handlers, propagation and level of the loggers a command configures."""
    return {name: (list(lg.handlers), lg.propagate, lg.level)
            for name in (LOGGER_NAME, "py.warnings") for lg in [logging.getLogger(name)]}


def _restore_logging(saved: dict[str, tuple[list[logging.Handler], bool, int]]) -> None:
    """Undo :func:`setup_logging`, so ``main()`` called in-process leaves logging as it was."""
    logging.captureWarnings(False)
    for name, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers, lg.propagate = handlers, propagate
        lg.setLevel(level)
