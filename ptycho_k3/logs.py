"""Logging of the commands: console on stderr, and a log file per run that starts with what was
logged before it existed (the input checks run first, and a run that fails there writes
nothing). No Keras."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

#: Logger of every ptycho-k3 module (the commands attach their handlers here).
LOGGER_NAME = "ptycho_k3"


def setup(prog: str, level: str = "INFO") -> logging.Logger:
    """Console logging on stderr for the ``ptycho_k3`` loggers at ``level``; returns the
    command's logger.

    Python warnings (e.g. from the config validation) are routed into the same log.
    """
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(logging.DEBUG)
    root.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s: %(message)s"))
    early = _EarlyRecords()
    root.handlers = [handler, early]
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.handlers = [handler, early]
    warnings_logger.propagate = False
    return logging.getLogger(f"{LOGGER_NAME}.cli.{prog}")


class _EarlyRecords(logging.Handler):
    """Holds the records logged before the log file exists (the input checks run first, and a
    run that fails there writes nothing); :func:`add_log_file` replays them into the file."""

    LIMIT = 10_000

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.LIMIT:
            self.records.append(record)


def add_log_file(path: Path) -> None:
    """Also log everything (DEBUG and up) to ``path`` (created with its directory), starting
    with what was logged since :func:`setup_logging`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    held: list[_EarlyRecords] = []
    for name in (LOGGER_NAME, "py.warnings"):
        logger = logging.getLogger(name)
        for early in [h for h in logger.handlers if isinstance(h, _EarlyRecords)]:
            logger.removeHandler(early)
            if all(early is not h for h in held):
                held.append(early)
    for early in held:
        for record in early.records:
            handler.handle(record)
        early.records.clear()
    logging.getLogger(LOGGER_NAME).addHandler(handler)
    logging.getLogger("py.warnings").addHandler(handler)


def close_log_files() -> None:
    for name in (LOGGER_NAME, "py.warnings"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler):
                h.close()
                logger.removeHandler(h)
