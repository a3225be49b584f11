"""The failure that is neither bad input nor a bug: valid input, and the run itself failed (for
example training diverged to a NaN loss). Commands report it in one line with exit status 3.
Bad input has its own errors beside what it checks (ConfigError, DataError, BundleError,
BackendError: exit 2). No Keras."""

from __future__ import annotations


class RunFailure(RuntimeError):
    """The run started on valid input and could not finish; the message says why and what to
    try. Exit status 3."""
