"""The simulation workflow of ``ptycho-simulate``: a :class:`~ptycho_k3.config.SimulationConfig`
-> the written NPZ files. The physics is imported when called (after the backend is chosen).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ptycho_k3.config import SimulationConfig


def _scan_with_probe(path: str):
    """A scan that has a probe: a simulation needs a real one (the readers' probe estimated from
    the data would be invented), so its absence is an error naming the file and key."""
    import numpy as np

    from ptycho_k3.data import DataError, load_npz

    try:
        with np.load(path, allow_pickle=False) as z:
            has_probe = "probeGuess" in z.files
    except (OSError, ValueError, zipfile.BadZipFile):
        has_probe = True  # unreadable: load_npz names the problem
    if not has_probe:
        raise DataError(f"{path}: missing key 'probeGuess': the probe, complex (N, N), "
                        "which a simulation needs")
    return load_npz(path)


def run_simulation(config: SimulationConfig, *, progress: bool = False) -> list[Path]:
    """Simulate as configured and return the written files.

    Raises:
        DataError: an unreadable input scan, or a bad value or unwritable output found while
            simulating (the message names it).
    """
    from ptycho_k3.data import DataError

    try:
        return _run(config, progress)
    except DataError:
        raise
    except (ValueError, OSError) as exc:  # bad values or an unwritable output: exit 2
        raise DataError(str(exc)) from exc


def _run(config: SimulationConfig, progress: bool) -> list[Path]:
    from ptycho_k3.data import save_npz
    from ptycho_k3.data.simulate import simulate_from_scan, simulate_train_test

    out_dir = Path(config.output_dir)
    if config.from_npz is not None:
        scan = _scan_with_probe(config.from_npz)
        sim = simulate_from_scan(scan, config.nphotons, config.seed, chunk=config.chunk_size,
                                 progress=progress)
        target = Path(config.output) if config.output else \
            out_dir / f"{Path(config.from_npz).stem}_sim.npz"
        return [save_npz(target, sim, compress=config.compress)]
    probe = None if config.probe is None else _scan_with_probe(config.probe).probe
    train, test = simulate_train_test(
        config.object, config.N, config.n_images, config.nphotons, config.seed,
        n_test_images=config.n_test_images, object_size=config.object_size, probe=probe,
        positions=config.positions, buffer=config.buffer, phase=config.phase,
        chunk=config.chunk_size, progress=progress)
    return [save_npz(out_dir / "train.npz", train, compress=config.compress),
            save_npz(out_dir / "test.npz", test, compress=config.compress)]
