"""The refinement peer: pty-chi (PyPI ``ptychi``) LSQML and ePIE on the ``refine`` measure's scans.

Optional: without ``ptychi`` installed (``pip install 'ptycho-k3[bench]'``) the worker writes one
record saying so and succeeds. Runs under the torch backend (pty-chi is PyTorch): the scans are
simulated exactly as in :mod:`benchmarks.measures.refine` (same seeds; compare the records'
``scan_fingerprint``), on the CPU, at the framework's default thread count.

Conventions, from pty-chi's documentation and source (``ptychi.api.options``, ``ptychi.api.task``,
``ptychi.forward_models``, ``ptychi.image_proc``):

- data: measured intensities (counts), not square-rooted; ``fft_shift=True`` because ours have DC
  at the centre ``(N/2, N/2)`` and pty-chi's far field (``torch.fft.fft2``, norm ``backward``)
  has it at the corner;
- probe ``(n_opr_modes, n_modes, N, N)`` = ``(1, 1, N, N)``: the scan's probe times ``s / N``, so
  ``|fft2(P' O)|^2 = s^2 |FFT(P O)|^2 / N^2`` equals our model's counts; not refined;
- object ``(n_slices, H, W)`` = ``(1, H, W)`` of ones (flat start) on the canvas ``refine`` uses
  (:func:`ptycho_k3.refine.canvas_for`, 2 spare pixels a side, origin ``x0, y0``);
- positions: separate x and y arrays in pixels, mapped to buffer indices as ``pos + origin``. A
  patch centred at buffer coordinate ``c`` covers pixels ``c - (N-1)/2 ...``, and the
  integer-snapped extraction (sub-pixel shifts applied to the probe) rounds ``pos`` and expects
  ``origin`` at a half pixel. So ``origin = (H//2 - 1/2, W//2 - 1/2)`` (``SPECIFIED``, pty-chi's
  own ``SUPPORT`` default for an even buffer) and ``pos = [y - y0 - H//2, x - x0 - W//2]``; then
  patch pixel ``N/2`` sits on scan position ``(x, y)`` as in ours. (With the origin at a whole
  pixel instead, ``round`` meets half pixels and patches land up to one pixel off: SSIM then
  stalls near 0.93.)

Settings: batch 128 (ours), CPU, seed 0, probe and positions fixed, object-probe ambiguity
removal off (the probe is known). LSQML: pty-chi defaults (Gaussian noise model, optimal step x
0.9) with ``rescale_probe_intensity_in_first_epoch=False`` (else epoch 1 only rescales the known
probe). ePIE: ``alpha = 1``, ``step_size = 0.5``: pty-chi sums a minibatch's overlapping updates,
and the classic step 1 diverges on the demo's flat-top disc probe at batch 128 (0.25 converges
slower on both scans). Sub-pixel shifts: pty-chi's default (Fourier shift); our simulator
samples the object bilinearly, so pty-chi's forward model differs slightly from the data's and
ours does not: its final SSIM is bounded a little lower for that reason alone.

The reconstructed object is placed in scan coordinates (``x0, y0``) and scored by the same
:class:`~ptycho_k3.refine.workflow.Scoring`; the registration shift the metric applies is recorded
(near 0 px when the position convention is right).
"""

from __future__ import annotations

import os
import sys
import time
import types
from typing import Any

import numpy as np

from benchmarks.common import Record, peak_rss_mib
from benchmarks.measures.refine import (
    N,
    convergence_records,
    demo_scan,
    final_records,
    fingerprint,
    fixture_scan,
    log,
    scoring,
    speed_records,
)
from benchmarks.plan import Settings

#: The record that says whether pty-chi ran (value None; ``config.skipped``, ``config.note``).
STATUS = "refine peer status"
#: The table columns of the two algorithms.
ALGORITHMS = {"lsqml": "pty-chi LSQML", "epie": "pty-chi ePIE"}
#: The batch size (positions per update) of both engines: ``RefineConfig().batch``.
BATCH = 128
#: ePIE object step (``step_size``, gamma of Maiden et al. 2017) and ``alpha`` (module docstring).
EPIE_STEP = 0.5
EPIE_ALPHA = 1.0


def _stub_torchvision() -> str:
    """Make ``import ptychi`` work where torchvision cannot be imported.

    ``ptychi.utils`` imports ``torchvision.transforms.GaussianBlur`` at module level but uses it
    only in ``generate_gaussian_random_image`` (random object starts), which this benchmark does
    not call. PyPI's torchvision wheels are built against CUDA torch and fail to load beside a
    CPU-only torch build, so where the real import fails a stand-in module is registered whose
    ``GaussianBlur`` raises if it is ever used. Returns what was done, for the records.
    """
    try:
        import torchvision  # noqa: F401

        return "torchvision imported"
    except Exception as exc:  # noqa: BLE001 - a broken install raises RuntimeError/OSError too
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]

    class GaussianBlur:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError("torchvision is not importable here (benchmark stand-in)")

    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.GaussianBlur = GaussianBlur  # type: ignore[attr-defined]
    package.transforms = transforms  # type: ignore[attr-defined]
    sys.modules["torchvision"] = package
    sys.modules["torchvision.transforms"] = transforms
    return f"torchvision stand-in (GaussianBlur unused by LSQML/ePIE here); import failed: {reason}"


def _import_ptychi() -> tuple[Any, str]:
    """``(ptychi module or None, note)``."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # pty-chi's per-epoch progress bar
    try:
        import ptychi  # noqa: F401
    except ImportError as exc:
        if "torchvision" not in str(exc):
            return None, f"ptychi not installed ({exc}); pip install 'ptycho-k3[bench]'"
    except Exception:  # noqa: BLE001 - torchvision present but broken (see _stub_torchvision)
        pass
    note = _stub_torchvision()
    try:
        import ptychi
        import ptychi.api  # noqa: F401
    except ImportError as exc:
        return None, f"ptychi not importable ({exc}); pip install 'ptycho-k3[bench]'"
    return ptychi, note


class PtyChiRun:
    """One pty-chi reconstruction of a scan, advanced an epoch at a time.

    Times (s) are wall seconds of ``task.run(1)`` calls only (scoring and setup excluded).
    """

    def __init__(self, scan: Any, algorithm: str, seed: int = 0):
        import ptychi.api as api
        from ptychi.api.task import PtychographyTask

        from ptycho_k3.refine import amplitude_scale, canvas_for

        n = scan.n
        s = amplitude_scale(scan)
        counts = np.square(scan.diffraction.astype(np.float32) * np.float32(s))
        canvas = canvas_for(scan.positions, n, 2)
        self.x0, self.y0 = canvas.x0, canvas.y0
        cy, cx = canvas.height // 2, canvas.width // 2
        probe = (np.asarray(scan.probe, np.complex64) * np.float32(s / n))[None, None]
        obj = np.ones((1, canvas.height, canvas.width), np.complex64)
        pos_x = scan.positions[:, 0] - canvas.x0 - cx
        pos_y = scan.positions[:, 1] - canvas.y0 - cy

        options = api.LSQMLOptions() if algorithm == "lsqml" else api.EPIEOptions()
        ro = options.reconstructor_options
        ro.batch_size = BATCH
        ro.default_device = api.Devices.CPU
        ro.random_seed = seed
        ro.num_epochs = 1
        if algorithm == "lsqml":
            ro.rescale_probe_intensity_in_first_epoch = False
        oo = options.object_options
        oo.optimizable = True
        oo.optimizer = api.Optimizers.SGD
        if algorithm == "epie":
            oo.step_size = EPIE_STEP
            oo.alpha = EPIE_ALPHA
        oo.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
        oo.position_origin_coords = np.array([cy - 0.5, cx - 0.5])
        oo.remove_object_probe_ambiguity.enabled = False
        options.probe_options.optimizable = False
        options.probe_position_options.optimizable = False
        options.data_options.fft_shift = True
        self.settings = {
            "algorithm": algorithm, "batch": BATCH, "device": "cpu",
            "noise_model": str(ro.noise_model) if algorithm == "lsqml" else "n/a (ePIE)",
            "object_step_size": oo.step_size,
            "object_alpha": EPIE_ALPHA if algorithm == "epie" else None,
            "patch_interpolation": str(oo.patch_interpolation_method),
            "probe": "known (the simulation's x s/N), fixed", "positions": "known, fixed",
            "start": "flat (ones)"}
        self.task = PtychographyTask(options, diffraction_data=counts, object_data=obj,
                                     probe_data=probe, probe_position_x_px=pos_x,
                                     probe_position_y_px=pos_y)

    def epoch(self) -> tuple[float, float]:
        """Run one epoch; ``(wall seconds, pty-chi's displayed loss of that epoch)``."""
        t0 = time.perf_counter()
        self.task.run(1)
        seconds = time.perf_counter() - t0
        table = getattr(self.task.reconstructor.loss_tracker, "table", None)
        loss = float(table.iloc[-1]["loss"]) if table is not None and len(table) else float("nan")
        return seconds, loss

    def predicted_counts(self, obj: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """pty-chi's predicted intensities (counts, DC at the centre) of positions ``indices`` for
        the object ``obj`` on this run's canvas. Replaces the run's object."""
        import torch

        with torch.no_grad():
            self.task.reconstructor.parameter_group.object.set_data(torch.as_tensor(obj[None]))
            y = self.task.reconstructor.forward_model.forward(torch.as_tensor(indices))
        return np.fft.fftshift(y.detach().cpu().numpy(), axes=(-2, -1))

    def obj(self) -> np.ndarray:
        """The current object, complex ``(H, W)``; pixel ``[r, c]`` is scan ``(x0+c, y0+r)``."""
        return np.asarray(self.task.get_data_to_cpu("object", as_numpy=True)[0])


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def forward_check(scan: Any, algorithm: str, count: int = 64) -> dict[str, float]:
    """Does pty-chi, given the true object, predict our noise-free counts? (the conventions test)

    Returns the relative L1 difference ``sum |I_ptychi - I_ours| / sum I_ours`` over the first
    ``count`` positions, where ``I_ours = s^2 |FFT(P * patch)|^2 / N^2`` of the simulation's own
    ground-truth patches, with the same number for the Poisson data (the noise level) and for
    the true object shifted by one pixel (what a wrong convention would look like).
    """
    from ptycho_k3.refine import amplitude_scale, canvas_for, place

    n, s = scan.n, amplitude_scale(scan)
    idx = np.arange(min(count, scan.n_positions))
    psi = scan.patches[idx] * scan.probe[None]
    ours = np.fft.fftshift(np.abs(np.fft.fft2(psi)) ** 2, axes=(-2, -1)) * (s * s / n**2)
    canvas = canvas_for(scan.positions, n, 2)
    true = place(scan.object, 0, 0, canvas)
    run = PtyChiRun(scan, algorithm)

    def rel(a: np.ndarray) -> float:
        return float(np.abs(a - ours).sum() / ours.sum())

    measured = np.square(scan.diffraction[idx].astype(np.float64) * s)
    return {"relative_difference": rel(run.predicted_counts(true, idx)),
            "noise_level": rel(measured),
            "one_pixel_shift": rel(run.predicted_counts(np.roll(true, 1, axis=1), idx))}


def scored_run(scan: Any, algorithm: str, epochs: int
               ) -> tuple[dict[str, list[float]], dict[str, Any], PtyChiRun]:
    """``epochs`` epochs, scored after each (and at the start). Returns the history (the keys
    of ``refine``'s; ``loss`` is pty-chi's displayed loss, entry 0 NaN), the settings and the
    run (its final object)."""
    score = scoring(scan)
    run = PtyChiRun(scan, algorithm)

    def measure() -> dict[str, Any]:
        m = score.metrics(run.obj(), run.x0, run.y0)
        return {"amplitude_ssim": _number(m["amplitude"].get("ssim")),
                "phase_ssim": _number(m["phase"].get("ssim")),
                "shift": [round(float(v), 3) for v in m["alignment"]["shift_total"]]}

    first = measure()
    h: dict[str, list[Any]] = {"iteration": [0], "seconds": [0.0], "loss": [float("nan")],
                               "amplitude_ssim": [first["amplitude_ssim"]],
                               "phase_ssim": [first["phase_ssim"]]}
    elapsed, shift = 0.0, first["shift"]
    for it in range(1, epochs + 1):
        seconds, loss = run.epoch()
        elapsed += seconds
        m = measure()
        h["iteration"].append(it)
        h["seconds"].append(elapsed)
        h["loss"].append(loss)
        h["amplitude_ssim"].append(m["amplitude_ssim"])
        h["phase_ssim"].append(m["phase_ssim"])
        shift = m["shift"]
    diverged = not all(np.isfinite(h["loss"][1:]))
    return h, {**run.settings, "final_registration_shift_px": shift, "diverged": diverged}, run


def timed_run(scan: Any, algorithm: str, epochs: int) -> tuple[list[float], dict[str, Any]]:
    """Cumulative wall seconds after each of ``epochs`` epochs (entry 0 = 0), no scoring; and
    the run's settings."""
    run = PtyChiRun(scan, algorithm)
    seconds = [0.0]
    for _ in range(epochs):
        seconds.append(seconds[-1] + run.epoch()[0])
    return seconds, run.settings


def run(settings: Settings, backend: str) -> list[Record]:
    """pty-chi LSQML and ePIE: speed on ``lcls``, convergence from a flat start on both scans."""
    ptychi, note = _import_ptychi()
    if ptychi is None:
        return [Record("pty-chi", STATUS, None, "", {"skipped": True, "note": note})]
    import torch

    version = getattr(ptychi, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("ptychi")
    base = {"engine": f"ptychi {version}", "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "import_note": note,
            "keras_backend_for_simulation": backend, "score_M": 20, "N": N}
    lcls = fixture_scan(settings.refine_positions)
    scans = {"lcls": lcls, "demo": demo_scan()}
    out: list[Record] = []
    for algorithm, column in ALGORITHMS.items():
        for name in ("lcls", "demo"):
            scan = scans[name]
            check = forward_check(scan, algorithm)
            out.append(Record(column, f"refine {name}: forward model vs ours, true object",
                              check["relative_difference"], "rel. L1",
                              {**base, **check, "scan": name,
                               "method": "sum|I_ptychi - I_ours| / sum I_ours, 64 positions, "
                                         "true object; noise_level = the same for the Poisson "
                                         "data, one_pixel_shift = for the object shifted 1 px"}))
            history, used, done = scored_run(scan, algorithm, settings.refine_peer_iterations)
            cfg = {**base, **used, "scan": name, "start": "flat",
                   "scan_fingerprint": fingerprint(scan)}
            out += convergence_records(column, f"{name} flat", history, cfg)
            out += final_records(column, f"{name} flat", scan, done.obj(), done.x0, done.y0, cfg)
            log(f"{column} {name}: {len(history['iteration']) - 1} epochs in "
                f"{history['seconds'][-1]:.1f} s, SSIM {history['amplitude_ssim'][-1]:.3f} / "
                f"{history['phase_ssim'][-1]:.3f}, registration shift "
                f"{used['final_registration_shift_px']} px")
        timed = [timed_run(lcls, algorithm, settings.refine_speed_iterations)
                 for _ in range(settings.refine_speed_repeats)]
        out += speed_records(column, lcls.n_positions, [t[0] for t in timed],
                             {**base, **timed[0][1], "scan": "lcls",
                              "scan_fingerprint": fingerprint(lcls)})
    out.append(Record("pty-chi", STATUS, None, "",
                      {**base, "skipped": False, "note": f"ptychi {version} ran ({note})"}))
    rss = peak_rss_mib()
    out += [Record(column, "refine peer worker peak RSS", rss, "MiB", base)
            for column in ALGORITHMS.values()]
    return out
