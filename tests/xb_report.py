"""Lines for the end-of-run "cross-backend agreement" summary (printed by tests/conftest.py)."""

from __future__ import annotations

LINES: list[str] = []


def add_summary_line(line: str) -> None:
    """Queue a line for the end-of-run summary."""
    LINES.append(line)
