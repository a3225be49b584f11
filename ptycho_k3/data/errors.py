"""The one exception type for bad input data."""

from __future__ import annotations


class DataError(ValueError):
    """A data file or array breaks the contract (docs/conventions.md §13).

    The message always names the file (when there is one), the key and what was expected, e.g.
    ``scan.npz: key 'probeGuess' has shape (32, 32); expected (N, N) = (64, 64)``.
    """
