"""Agreement checks between backends, with a per-property record of examples and worst errors.

Every array is compared to the same array of the reference backend (TensorFlow) as
``max |a - ref| / max |ref|`` (relative to the array's own scale, so a gradient that is large in
a few pixels does not hide a wrong sign elsewhere only if the wrong values are comparable to the
largest ones: a deliberately weak but robust criterion, which every property pairs with a
tolerance derived from its accumulation length).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

REFERENCE = "tensorflow"

#: property -> [examples run, worst relative difference seen]
STATS: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])


def relative(a: np.ndarray, ref: np.ndarray, floor: float = 1e-30) -> float:
    kind = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(ref) else np.float64
    a, ref = np.asarray(a, kind), np.asarray(ref, kind)
    assert a.shape == ref.shape, f"shape {a.shape} != {ref.shape}"
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(ref))):
        same = np.array_equal(np.isfinite(a), np.isfinite(ref)) and np.allclose(
            a[np.isfinite(a)], ref[np.isfinite(ref)], rtol=0, atol=0)
        return 0.0 if same else float("inf")
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, floor)
    return float(np.max(np.abs(a - ref))) / scale if a.size else 0.0


def agree(prop: str, per_backend: Mapping[str, Sequence[np.ndarray]], rtol: float,
          labels: Sequence[str] | None = None, floor: float = 1e-30) -> float:
    """Assert every backend's arrays equal the reference's within ``rtol``; return the worst."""
    ref = per_backend[REFERENCE]
    worst = 0.0
    failures = []
    for backend, arrays in per_backend.items():
        if backend == REFERENCE:
            continue
        assert len(arrays) == len(ref), (backend, len(arrays), len(ref))
        for k, (a, r) in enumerate(zip(arrays, ref, strict=True)):
            err = relative(a, r, floor)
            worst = max(worst, err)
            if not err <= rtol:
                name = labels[k] if labels else f"#{k}"
                failures.append(f"{prop} {name}: {backend} vs {REFERENCE} relative difference "
                                f"{err:.3e} > {rtol:g}")
    STATS[prop][0] += 1
    STATS[prop][1] = max(STATS[prop][1], worst if np.isfinite(worst) else float("inf"))
    assert not failures, "\n".join(failures)
    return worst
