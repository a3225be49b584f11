"""``ptycho-simulate``: write simulated train/test NPZ files (or re-simulate an existing scan).

Examples::

    ptycho-simulate --object lines --N 64 --n_images 2000 --nphotons 1e9 --seed 0 --output_dir data/
    ptycho-simulate --from scan.npz --nphotons 1e6 --output_dir data/

Arguments are parsed and the backend chosen before Keras is imported (Keras fixes its backend on
first import). Errors exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Sequence

PROG = "ptycho-simulate"
_BACKENDS = {"tensorflow": "tensorflow", "torch": "torch", "pytorch": "torch", "jax": "jax"}
_OBJECTS = ("lines", "grf", "points", "diagonals")


class _UsageError(Exception):
    """A bad argument; reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise _UsageError(message)


def _add(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add ``--name`` plus its hyphenated alias (``--n_images`` and ``--n-images``)."""
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*flags, dest=name, **kwargs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Simulate ptychography datasets (diffraction amplitudes sqrt(counts)/s_sim, "
                    "ground-truth object and patches) as NPZ files the trainer reads. Without "
                    "--from, writes OUTPUT_DIR/train.npz and OUTPUT_DIR/test.npz from two "
                    "different objects of the same kind, with the same probe and positions.",
    )
    _add(p, "object", choices=_OBJECTS, default="lines",
         help="synthetic object kind (default lines)")
    _add(p, "N", type=int, choices=(64, 128, 256), default=64,
         help="patch / detector side in pixels (default 64)")
    _add(p, "n_images", type=_positive_int, default=2000,
         help="diffraction patterns in train.npz (default 2000)")
    _add(p, "n_test_images", type=_positive_int, default=None,
         help="patterns in test.npz (default: same as --n_images)")
    _add(p, "nphotons", type=_positive_float, default=1e9,
         help="expected photons per pattern, Poisson noise level (default 1e9)")
    _add(p, "seed", type=int, default=0,
         help="seed of every random choice: objects, positions, noise (default 0)")
    _add(p, "output_dir", default=".",
         help="directory for the output files (created if missing; default .)")
    _add(p, "object_size", type=_positive_int, default=None,
         help="object side in pixels (default int(3.5 N), 224 for N 64)")
    _add(p, "positions", choices=("random", "raster"), default="random",
         help="scan positions: uniform random inside the buffer, or a regular raster")
    _add(p, "buffer", type=float, default=None,
         help="distance of positions from the object edge in pixels (default N/2)")
    _add(p, "probe", default=None, metavar="NPZ",
         help="take the probe (probeGuess, (N, N)) from this NPZ instead of the default disc")
    _add(p, "phase", action=argparse.BooleanOptionalAction, default=True,
         help="non-uniform object phase by the set_phi formula (default on; --no-phase: zero)")
    p.add_argument("--from", dest="from_npz", default=None, metavar="NPZ",
                   help="re-simulate at the object, probe and positions of this NPZ "
                        "(needs objectGuess); writes OUTPUT_DIR/<name>_sim.npz or --output")
    _add(p, "output", default=None, metavar="NPZ",
         help="output file for --from (default OUTPUT_DIR/<input name>_sim.npz)")
    _add(p, "chunk_size", type=_positive_int, default=512,
         help="patterns per backend call (memory bound; default 512)")
    _add(p, "compress", action=argparse.BooleanOptionalAction, default=False,
         help="write compressed NPZ files (smaller, slower; default off)")
    _add(p, "progress", action=argparse.BooleanOptionalAction, default=True,
         help="progress line on stderr for long runs (default on)")
    _add(p, "backend", choices=tuple(_BACKENDS), default=None,
         help="Keras backend (pytorch = torch); default $KERAS_BACKEND, else tensorflow")
    return p


def select_backend(requested: str | None) -> str:
    """Resolve ``--backend`` > ``KERAS_BACKEND`` > tensorflow and set it before Keras loads."""
    name = requested or os.environ.get("KERAS_BACKEND") or "tensorflow"
    backend = _BACKENDS.get(name)
    if backend is None:
        raise _UsageError(f"unknown backend {name!r} (KERAS_BACKEND); use one of "
                          f"{', '.join(_BACKENDS)}")
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != backend:
            raise _UsageError(f"keras is already imported with backend {current!r}; "
                              f"start a new process to use {backend!r}")
    if importlib.util.find_spec(backend) is None:
        raise _UsageError(f"backend {backend!r} is not installed; install it with "
                          f"pip install 'ptycho-k3[{backend}]'")
    os.environ["KERAS_BACKEND"] = backend
    return backend


def _run(args: argparse.Namespace) -> list[str]:
    # Imported here, after the backend is chosen.
    from pathlib import Path

    from ptycho_k3.data import load_npz, save_npz
    from ptycho_k3.data.simulate import simulate_from_scan, simulate_train_test

    out_dir = Path(args.output_dir)
    progress = args.progress and sys.stderr.isatty()
    if args.from_npz is not None:
        scan = load_npz(args.from_npz)
        sim = simulate_from_scan(scan, args.nphotons, args.seed, chunk=args.chunk_size,
                                 progress=progress)
        target = Path(args.output) if args.output else \
            out_dir / f"{Path(args.from_npz).stem}_sim.npz"
        return [str(save_npz(target, sim, compress=args.compress))]
    probe = None
    if args.probe is not None:
        probe = load_npz(args.probe).probe
    train, test = simulate_train_test(
        args.object, args.N, args.n_images, args.nphotons, args.seed,
        n_test_images=args.n_test_images, object_size=args.object_size, probe=probe,
        positions=args.positions, buffer=args.buffer, phase=args.phase,
        chunk=args.chunk_size, progress=progress)
    return [str(save_npz(out_dir / "train.npz", train, compress=args.compress)),
            str(save_npz(out_dir / "test.npz", test, compress=args.compress))]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments or data)."""
    try:
        args = build_parser().parse_args(argv)
        if args.from_npz is None and args.output is not None:
            raise _UsageError("--output only applies with --from; use --output_dir")
        select_backend(args.backend)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from ptycho_k3.data import DataError

    t0 = time.perf_counter()
    try:
        written = _run(args)
    except (DataError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    for path in written:
        print(f"wrote {path}")
    print(f"done in {dt:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
