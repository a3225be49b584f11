"""Run the refinement on a scan given as NumPy arrays under one backend; save what it produced.

Usage: ``KERAS_BACKEND=<name> python tests/refine/refine_worker.py in.npz out.npz``.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(src: str, dst: str) -> None:
    import keras

    from ptycho_k3.config import RefineConfig
    from ptycho_k3.data import ScanData
    from ptycho_k3.refine import refine

    with np.load(src) as f:
        a = {k: f[k] for k in f.files}
    scan = ScanData(xcoords=a["x"], ycoords=a["y"], diffraction=a["diffraction"],
                    probe=a["probe"], metadata={"s_sim": float(a["s_sim"])})
    cfg = RefineConfig.from_dict(json.loads(str(a["config"])))
    result = refine(scan, a["start"], cfg, x0=0, y0=0)
    np.savez(dst, backend=np.array(keras.backend.backend()), object=result.obj,
             probe=result.probe, positions=result.positions,
             loss=np.asarray(result.history["loss"]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
