"""Simulated ptychography datasets (docs/conventions.md §8-§10, §15).

Recipe (the original's non-grid simulator, with ground truth at the true positions):
1. patches ``O_m`` cut from the object at the scan positions (bilinear, ``patch[N/2,N/2]=O[y,x]``);
2. exit waves ``Psi_m = P * O_m`` with the raw (unnormalised) probe;
3. ``s_sim = sqrt(nphotons / mean_m sum |Psi_m|^2)`` so a pattern holds ``nphotons`` on average;
4. ``diff3d = sqrt(Poisson((s_sim * A_m)^2)) / s_sim`` with ``A = fftshift(|FFT2 Psi|) / N``.
Steps 2 and 4 are the illumination and far field of ``physics.PtychoOperator``, the forward model
the PINN and the refinement use.
So the stored amplitudes are ``sqrt(counts) / s_sim`` (not normalised; the loader normalises).

Everything random comes from ``numpy.random.Generator`` objects derived from one seed. Work is
done in chunks of patterns through the backend (patch shifts, FFTs), so memory stays bounded and
10k patterns at N = 64 take seconds.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence

import numpy as np

from ptycho_k3.config import DEFAULT_NPHOTONS, SUPPORTED_N

from .errors import DataError
from .npz import ScanData
from .objects import OBJECT_KINDS, make_object


def _buffer(shape: Sequence[int], n: int, buffer: float | None) -> float:
    h, w = shape
    b = n / 2.0 if buffer is None else float(buffer)
    return float(min(max(b, 0.0), min(h, w) / 2.0 - 1.0))


def random_positions(n_images: int, shape: Sequence[int], n: int, rng: np.random.Generator,
                     buffer: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Uniform positions in ``[b, W - b] x [b, H - b]`` (object pixels), float64 ``(n_images,)``.

    ``b`` = ``buffer`` (default N/2, so every patch lies inside the object), clipped to
    ``min(H, W)/2 - 1``.
    """
    h, w = shape
    b = _buffer(shape, n, buffer)
    x = rng.uniform(b, w - b, n_images)
    y = rng.uniform(b, h - b, n_images)
    return x, y


def raster_positions(n_images: int, shape: Sequence[int], n: int,
                     buffer: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A regular raster of ``n_images`` points, row by row, filling ``[b, W-b] x [b, H-b]``.

    The raster has ``ceil(sqrt(n_images))`` columns; the last row may be partly filled.
    """
    h, w = shape
    b = _buffer(shape, n, buffer)
    cols = max(1, math.ceil(math.sqrt(n_images)))
    rows = max(1, math.ceil(n_images / cols))
    xs = np.linspace(b, w - b, cols)
    ys = np.linspace(b, h - b, rows)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return gx.ravel()[:n_images].astype(np.float64), gy.ravel()[:n_images].astype(np.float64)


class _Progress:
    """A one-line progress counter on stderr (only for long runs, and only when enabled)."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self.total, self.enabled, self.label = total, enabled, label
        self.t0 = time.perf_counter()

    def update(self, done: int) -> None:
        if self.enabled:
            rate = done / max(time.perf_counter() - self.t0, 1e-9)
            sys.stderr.write(f"\r{self.label}: {done}/{self.total} patterns ({rate:,.0f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def simulate_dataset(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray,
                     ycoords: np.ndarray, nphotons: float, rng: np.random.Generator, *,
                     chunk: int = 512, progress: bool = False, metadata: dict | None = None,
                     label: str = "simulating") -> ScanData:
    """Simulate noisy diffraction of ``obj`` under ``probe`` at the given positions.

    Args:
        obj: complex object ``(H, W)``.
        probe: complex probe ``(N, N)`` (used as is, not normalised), N in {64, 128, 256}.
        xcoords, ycoords: positions ``(M,)`` in object pixels (x column, y row).
        nphotons: expected photons per pattern (> 0).
        rng: generator for the Poisson noise.
        chunk: patterns per backend call.
        progress: print a progress line on stderr.
        metadata: extra metadata merged into the result's (``nphotons`` and ``s_sim`` are set).

    Returns:
        ScanData with ``diffraction = sqrt(counts)/s_sim`` (float32 (M, N, N)), ``object``,
        ``probe`` and ``patches`` = the ground-truth object patches at the true positions.
    """
    from keras import ops

    from ptycho_k3 import physics

    from .patches import cut_patches

    p = np.asarray(probe).astype(np.complex64)
    n = p.shape[-1]
    if p.shape != (n, n) or n not in SUPPORTED_N:
        raise DataError(f"probe has shape {p.shape}; expected (N, N) with N in {SUPPORTED_N}")
    if not (nphotons > 0 and math.isfinite(nphotons)):
        raise ValueError(f"nphotons must be a finite number > 0, got {nphotons}")
    o = np.asarray(obj).astype(np.complex64)
    x = np.asarray(xcoords, dtype=np.float64)
    y = np.asarray(ycoords, dtype=np.float64)
    m = x.shape[0]
    if m == 0:
        raise DataError("no scan positions to simulate")
    def pair(z):
        return (ops.convert_to_tensor(np.ascontiguousarray(z.real)),
                ops.convert_to_tensor(np.ascontiguousarray(z.imag)))

    # The forward operator's illumination and far field (physics.PtychoOperator). Its extraction
    # stage is not used here: the ground-truth patches (§15) take float64 positions and read
    # zeros outside the object, whereas the scan frame's gather takes float32 canvas positions
    # (~1e-5 px of rounding at x ~ 200) and needs every window inside the canvas.
    op = physics.PtychoOperator(n)
    p_re, p_im = pair(p)
    patches = cut_patches(o, x, y, n, chunk=chunk)
    exit_waves = np.empty((m, n, n), dtype=np.complex64)
    for start in range(0, m, chunk):
        sl = slice(start, min(start + chunk, m))
        e_re, e_im = op.illuminate(*pair(patches[sl]), p_re, p_im)
        exit_waves[sl] = ops.convert_to_numpy(e_re) + 1j * ops.convert_to_numpy(e_im)
    s_sim = physics.simulation_intensity_scale(exit_waves, nphotons)
    diff = np.empty((m, n, n), dtype=np.float32)
    bar = _Progress(m, progress, label)
    for start in range(0, m, chunk):
        sl = slice(start, min(start + chunk, m))
        amp = op.amplitude(*pair(exit_waves[sl]))
        diff[sl] = physics.poisson_amplitudes(ops.convert_to_numpy(amp), s_sim, rng)
        bar.update(sl.stop)
    bar.close()
    meta = dict(metadata or {})
    meta.update({"nphotons": float(nphotons), "s_sim": float(s_sim),
                 "diffraction_units": "amplitude sqrt(counts)/s_sim"})
    return ScanData(xcoords=x, ycoords=y, diffraction=diff, probe=p, object=o, patches=patches,
                    metadata=meta)


def _probe_for(n: int, probe: np.ndarray | None) -> np.ndarray:
    if n not in SUPPORTED_N:
        raise ValueError(f"N must be one of {SUPPORTED_N}, got {n}")
    if probe is None:
        from ptycho_k3 import physics

        return np.asarray(physics.default_probe(n)).astype(np.complex64)
    p = np.asarray(probe).astype(np.complex64)
    if p.shape != (n, n):
        raise DataError(f"probe has shape {p.shape}; expected (N, N) = ({n}, {n})")
    return p


def _positions(kind: str, n_images: int, shape, n: int, rng, buffer):
    if kind == "random":
        return random_positions(n_images, shape, n, rng, buffer)
    if kind == "raster":
        return raster_positions(n_images, shape, n, buffer)
    raise ValueError(f"positions must be 'random' or 'raster', got {kind!r}")


def simulate_train_test(object_kind: str = "lines", n: int = 64, n_images: int = 1000,
                        nphotons: float = DEFAULT_NPHOTONS, seed: int = 0, *,
                        n_test_images: int | None = None,
                        object_size: int | None = None, probe: np.ndarray | None = None,
                        positions: str = "random", buffer: float | None = None,
                        phase: bool = True, chunk: int = 512,
                        progress: bool = False) -> tuple[ScanData, ScanData]:
    """Two datasets from two different objects of one kind, same probe (docs/conventions.md §10).

    The objects, positions and noise come from independent generators spawned from ``seed``.
    The test set uses the first ``n_test_images`` (default ``n_images``) positions of the same
    position draw, so both sets share the scan geometry.

    Args:
        object_kind: one of ``lines``, ``grf``, ``points``, ``diagonals``.
        n: patch side N (64, 128, 256).
        n_images: training patterns. nphotons: photons per pattern.
        object_size: object side (default ``int(3.5 N)``, 224 at N = 64).
        probe: complex ``(N, N)`` probe; default the disc probe (physics.default_probe).
        positions: ``random`` (uniform inside a buffer, default N/2) or ``raster``.
        phase: non-uniform set_phi phase (default) or zero phase.

    Returns:
        ``(train, test)`` ScanData with objectGuess, ground-truth patches and metadata.
    """
    if object_kind not in OBJECT_KINDS:
        raise ValueError(f"unknown object kind {object_kind!r}; expected one of {OBJECT_KINDS}")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    n_test = n_images if n_test_images is None else int(n_test_images)
    if n_test < 1:
        raise ValueError(f"n_test_images must be >= 1, got {n_test}")
    size = int(3.5 * n) if object_size is None else int(object_size)
    if size < n + 2:
        raise ValueError(f"object_size {size} must be at least N + 2 = {n + 2}")
    p = _probe_for(n, probe)
    r_obj_train, r_obj_test, r_pos, r_noise_train, r_noise_test = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    x, y = _positions(positions, max(n_images, n_test), (size, size), n, r_pos, buffer)
    base = {"object": object_kind, "seed": int(seed), "N": int(n), "object_size": size,
            "phase": bool(phase), "positions": positions}
    out = []
    for split, r_obj, r_noise, count in (("train", r_obj_train, r_noise_train, n_images),
                                         ("test", r_obj_test, r_noise_test, n_test)):
        obj = make_object(object_kind, size, r_obj, phase=phase)
        out.append(simulate_dataset(
            obj, p, x[:count], y[:count], nphotons, r_noise, chunk=chunk, progress=progress,
            metadata={"simulation": {**base, "split": split}}, label=f"simulating {split}"))
    return out[0], out[1]


def simulate_scan(object_kind: str = "lines", n: int = 64, n_images: int = 1000,
                  nphotons: float = DEFAULT_NPHOTONS, seed: int = 0, **kwargs) -> ScanData:
    """One simulated dataset: the training half of :func:`simulate_train_test`."""
    kwargs["n_test_images"] = 1
    train, _ = simulate_train_test(object_kind, n, n_images, nphotons, seed, **kwargs)
    return train


def simulate_from_scan(data: ScanData, nphotons: float | None = None, seed: int = 0, *,
                       chunk: int = 512, progress: bool = False) -> ScanData:
    """Re-simulate a scan at its own object, probe and positions (e.g. a measured scan).

    ``nphotons`` defaults to the scan's metadata value, else ``DEFAULT_NPHOTONS`` (1e9). Needs
    ``objectGuess``.
    """
    where = data.source or "scan"
    if data.object is None:
        raise DataError(f"{where}: key 'objectGuess' is missing; simulating from a scan needs "
                        "the ground-truth object (H, W)")
    if nphotons is None:
        nphotons = data.nphotons or DEFAULT_NPHOTONS
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    sim = simulate_dataset(data.object, data.probe, data.xcoords, data.ycoords, nphotons, rng,
                           chunk=chunk, progress=progress,
                           metadata={"simulation": {"from": where, "seed": int(seed)}})
    # keep the scan's bookkeeping arrays
    from dataclasses import replace

    return replace(sim, xcoords_start=data.xcoords_start, ycoords_start=data.ycoords_start,
                   scan_index=data.scan_index)
