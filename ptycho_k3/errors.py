"""Errors with no better home below Keras: a checkpoint that cannot be resumed (bad input, exit 2,
like ConfigError, DataError, BundleError and BackendError beside what they check), and the
failure that is neither bad input nor a bug: valid input, and the run itself failed (for example
training diverged to a NaN loss; exit 3, or the signal's status). No Keras."""

from __future__ import annotations


class RunFailure(RuntimeError):
    """The run started on valid input and could not finish; the message says why and what to
    try. Exit status 3."""


class CheckpointError(ValueError):
    """A training checkpoint that cannot be resumed; the message names the file and why.
    Exit status 2."""
