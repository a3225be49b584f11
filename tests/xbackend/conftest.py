"""Cross-backend property tests: one long-lived worker per backend for the whole pytest run.

``@given`` tests run here, in the parent; every generated example goes to the TensorFlow,
PyTorch and JAX workers (:mod:`xb_client`), and values and gradients are compared
(:mod:`xb_compare`). A failing example shrinks like any hypothesis failure, and the report shows
the minimal inputs. The per-property example counts and worst differences are printed at the end.
"""

from __future__ import annotations

import pytest

from xb_client import WorkerPool
from xb_compare import STATS
from xb_report import add_summary_line


@pytest.fixture(scope="session")
def pool():
    workers = WorkerPool()
    yield workers
    workers.close()
    for prop, (count, worst) in sorted(STATS.items()):
        add_summary_line(f"{prop:>34s}: {int(count):4d} examples x 3 backends, worst relative "
                         f"difference {worst:.2e}")
