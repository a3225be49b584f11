"""``ptycho-simulate``: write simulated train/test NPZ files (or re-simulate an existing scan).

Examples::

    ptycho-simulate --object lines --N 64 --n_images 2000 --nphotons 1e9 --seed 0 --output_dir data/
    ptycho-simulate --from scan.npz --nphotons 1e6 --output_dir data/

Arguments are parsed and the backend chosen before Keras is imported (Keras fixes its backend on
first import). Bad arguments or data exit with status 2 and one line on stderr; anything
unexpected exits with 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile
from collections.abc import Sequence

from ptycho_k3.cli._common import (
    Parser,
    UsageError,
    add_bool,
    add_common,
    add_flag,
    integer,
    number,
    positive_int,
    positive_number,
    quiet_frameworks,
    run_main,
    select_backend,
    setup_logging,
)
from ptycho_k3.config import DEFAULT_NPHOTONS, SUPPORTED_N
from ptycho_k3.data.objects import OBJECT_KINDS

PROG = "ptycho-simulate"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Simulate ptychography datasets (diffraction amplitudes sqrt(counts)/s_sim, "
                    "ground-truth object and patches) as NPZ files the trainer reads. Without "
                    "--from, writes OUTPUT_DIR/train.npz and OUTPUT_DIR/test.npz from two "
                    "different objects of the same kind, with the same probe and positions.",
    )
    add_flag(p, "object", choices=OBJECT_KINDS, default="lines",
             help="synthetic object kind (default lines)")
    add_flag(p, "N", type=integer, choices=SUPPORTED_N, default=64,
             help="patch / detector side in pixels (default 64)")
    add_flag(p, "n_images", type=positive_int, default=2000,
             help="diffraction patterns in train.npz (default 2000)")
    add_flag(p, "n_test_images", type=positive_int, default=None,
             help="patterns in test.npz (default: same as --n_images)")
    add_flag(p, "nphotons", type=positive_number, default=DEFAULT_NPHOTONS,
             help=f"expected photons per pattern, Poisson noise level (default {DEFAULT_NPHOTONS:g})")
    add_flag(p, "seed", type=integer, default=0,
             help="seed of every random choice: objects, positions, noise (default 0)")
    add_flag(p, "output_dir", default=".",
             help="directory for the output files (created if missing; default .)")
    add_flag(p, "object_size", type=positive_int, default=None,
             help="object side in pixels (default int(3.5 N), 224 for N 64)")
    add_flag(p, "positions", choices=("random", "raster"), default="random",
             help="scan positions: uniform random inside the buffer, or a regular raster")
    add_flag(p, "buffer", type=number, default=None,
             help="distance of positions from the object edge in pixels (default N/2)")
    add_flag(p, "probe", default=None, metavar="NPZ",
             help="take the probe (probeGuess, (N, N)) from this NPZ instead of the default disc")
    add_bool(p, "phase", default=True,
             help="non-uniform object phase by the set_phi formula (default on; --no-phase: zero)")
    p.add_argument("--from", dest="from_npz", default=None, metavar="NPZ",
                   help="re-simulate at the object, probe and positions of this NPZ "
                        "(needs objectGuess); writes OUTPUT_DIR/<name>_sim.npz or --output")
    add_flag(p, "output", default=None, metavar="NPZ",
             help="output file for --from (default OUTPUT_DIR/<input name>_sim.npz)")
    add_flag(p, "chunk_size", type=positive_int, default=512,
             help="patterns per backend call (memory bound; default 512)")
    add_bool(p, "compress", default=False,
             help="write compressed NPZ files (smaller, slower; default off)")
    add_bool(p, "progress", default=True,
             help="progress line on stderr for long runs (default on)")
    add_common(p)
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.from_npz is None and args.output is not None:
        raise UsageError("--output only applies with --from; use --output_dir")
    return args


def _run(args: argparse.Namespace) -> list[str]:
    # Imported here, after the backend is chosen.
    from pathlib import Path

    import numpy as np

    from ptycho_k3.data import DataError, load_npz, save_npz
    from ptycho_k3.data.simulate import simulate_from_scan, simulate_train_test

    def with_probe(path: str):
        # A simulation needs a real probe: the readers' probe estimated from the data would be
        # invented, so its absence is an error here (checked before reading, so nothing is logged).
        try:
            with np.load(path, allow_pickle=False) as z:
                has_probe = "probeGuess" in z.files
        except (OSError, ValueError, zipfile.BadZipFile):
            has_probe = True  # unreadable: load_npz names the problem
        if not has_probe:
            raise DataError(f"{path}: missing key 'probeGuess': the probe, complex (N, N), "
                            "which a simulation needs")
        return load_npz(path)

    out_dir = Path(args.output_dir)
    progress = args.progress and not args.quiet and sys.stderr.isatty()
    if args.from_npz is not None:
        scan = with_probe(args.from_npz)
        sim = simulate_from_scan(scan, args.nphotons, args.seed, chunk=args.chunk_size,
                                 progress=progress)
        target = Path(args.output) if args.output else \
            out_dir / f"{Path(args.from_npz).stem}_sim.npz"
        return [str(save_npz(target, sim, compress=args.compress))]
    probe = None
    if args.probe is not None:
        probe = with_probe(args.probe).probe
    train, test = simulate_train_test(
        args.object, args.N, args.n_images, args.nphotons, args.seed,
        n_test_images=args.n_test_images, object_size=args.object_size, probe=probe,
        positions=args.positions, buffer=args.buffer, phase=args.phase,
        chunk=args.chunk_size, progress=progress)
    return [str(save_npz(out_dir / "train.npz", train, compress=args.compress)),
            str(save_npz(out_dir / "test.npz", test, compress=args.compress))]


def run(args: argparse.Namespace) -> int:

    quiet_frameworks()
    setup_logging(PROG, args)
    select_backend(args.backend)
    from ptycho_k3.data import DataError

    t0 = time.perf_counter()
    try:
        written = _run(args)
    except DataError:
        raise
    except (ValueError, OSError) as exc:  # bad values or an unwritable output: exit 2
        raise DataError(str(exc)) from exc
    dt = time.perf_counter() - t0
    if not args.quiet:
        for path in written:
            print(f"wrote {path}")
        print(f"done in {dt:.1f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments or data, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())
