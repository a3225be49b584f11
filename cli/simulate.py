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
from collections.abc import Sequence

from ptycho_k3.cli._common import (
    Parser,
    add_bool,
    add_common,
    quiet_frameworks,
    run_main,
    select_backend,
    setup_logging,
)
from ptycho_k3.cli._fields import add_fields, config_from
from ptycho_k3.config import SimulationConfig

PROG = "ptycho-simulate"
#: Namespace entries that are not simulation settings.
_NOT_CONFIG = ("backend", "quiet", "verbose", "console_level", "progress")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Simulate ptychography datasets (diffraction amplitudes sqrt(counts)/s_sim, "
                    "ground-truth object and patches) as NPZ files the trainer reads. Without "
                    "--from, writes OUTPUT_DIR/train.npz and OUTPUT_DIR/test.npz from two "
                    "different objects of the same kind, with the same probe and positions.",
    )
    add_fields(p, SimulationConfig, skip=["output", "chunk_size", "compress"])
    p.add_argument("--from", dest="from_npz", default=None, metavar="NPZ",
                   help="re-simulate at the object, probe and positions of this NPZ "
                        "(needs objectGuess); writes OUTPUT_DIR/<name>_sim.npz or --output")
    add_fields(p, SimulationConfig, names=["output", "chunk_size", "compress"])
    add_bool(p, "progress", default=True,
             help="progress line on stderr for long runs (default on)")
    add_common(p)
    return p


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """The validated settings of parsed arguments; a bad value is a usage error."""
    return config_from(SimulationConfig, {k: v for k, v in vars(args).items()
                                          if k not in _NOT_CONFIG})


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    simulation_config(args)  # every bad value is a usage error before any work
    return args


def run(args: argparse.Namespace) -> int:
    quiet_frameworks()
    setup_logging(PROG, args)
    select_backend(args.backend)
    from ptycho_k3.workflows.simulate import run_simulation

    t0 = time.perf_counter()
    written = run_simulation(simulation_config(args),
                             progress=args.progress and not args.quiet and sys.stderr.isatty())
    if not args.quiet:
        for path in written:
            print(f"wrote {path}")
        print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments or data, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())
