"""What to measure and how long: the quick and full settings, and the job order."""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("tensorflow", "torch", "jax")

#: Training shapes of issue 6: (name, N, gridsize, batch size, precision).
TRAIN_SHAPES = (
    ("N64_gs1", 64, 1, 16, "float32"),
    ("N64_gs2", 64, 2, 16, "float32"),
    ("N128_gs1", 128, 1, 16, "float32"),
    ("N64_gs1_bf16", 64, 1, 16, "mixed_bfloat16"),
)

#: Worker measures in run order (each one worker process per backend).
MEASURES = (
    "train_N64_gs1", "train_N64_gs2", "train_N128_gs1", "train_N64_gs1_bf16",
    "infer", "scaling", "train_rss", "gflops", "quality", "distribute",
    "cli", "refine",
)

#: The peer of the ``refine`` measure (pty-chi): one worker, after the backends' refine workers.
PEER_MEASURE = "refine_peer"
#: pty-chi runs on PyTorch, so its worker simulates the scans under the torch backend.
PEER_BACKEND = "torch"
#: Measures whose records go to ``refine_latest.*`` instead of ``latest.*``.
REFINE_GROUPS = ("refine", PEER_MEASURE)
#: Everything a worker process can be asked to run.
WORKER_MEASURES = (*MEASURES, PEER_MEASURE)


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts of one harness mode.

    Attributes:
        quick: the quick mode (``BENCH_QUICK=1``).
        train_groups: groups per epoch the seconds/epoch refer to (issue 6: 512).
        train_epochs: full mode: real epochs run through ``ptycho_k3.train.train`` (the first,
            which compiles, is dropped); 0 means: time ``train_steps`` single steps instead.
        train_steps: timed steps per training shape in step mode (after one warm-up step);
            a tuple parallel to :data:`TRAIN_SHAPES`.
        infer_patterns: diffraction patterns per inference repeat.
        infer_repeats: timed repeats of the inference measure (after a warm-up).
        scaling_patterns: scan sizes of the scaling measure.
        quality_groups, quality_epochs: the fixed training budget of the quality measure.
        quality_test_patterns: patterns reconstructed and scored.
        gflops_repeats: timed repeats of each matmul / forward pass.
        cli_repeats: timed CLI cold starts (after one untimed one that warms the disk cache).
        cli_patterns: scan sizes of the CLI end-to-end inference (issue 15: the original's
            543-pattern scan, and 1,000).
        refine_positions: scan positions of the realistic (LCLS fixture) refinement scan.
        refine_iterations: fixed iteration budget of our refinement runs (flat and PINN start).
        refine_peer_iterations: iteration (epoch) budget of the pty-chi runs.
        refine_speed_iterations: iterations of one timed refinement repeat (the first, which
            compiles, is excluded from the rate).
        refine_speed_repeats: timed repeats of the speed run (median reported).
        refine_pinn_groups, refine_pinn_epochs: training budget of the PINN that gives the
            PINN start (full mode: ``make demo``'s 512 groups, half its 10 epochs).
        train_rss_patterns: scan sizes of the training-memory measure (``train_rss``).
        train_rss_steps: training steps of each of its cases (2 epochs of half as many).
    """

    quick: bool
    train_groups: int
    train_epochs: int
    train_steps: tuple[int, ...]
    infer_patterns: int
    infer_repeats: int
    scaling_patterns: tuple[int, ...]
    quality_groups: int
    quality_epochs: int
    quality_test_patterns: int
    gflops_repeats: int
    cli_repeats: int
    cli_patterns: tuple[int, ...]
    refine_positions: int
    refine_iterations: int
    refine_peer_iterations: int
    refine_speed_iterations: int
    refine_speed_repeats: int
    refine_pinn_groups: int
    refine_pinn_epochs: int
    train_rss_patterns: tuple[int, ...]
    train_rss_steps: int


QUICK = Settings(
    quick=True, train_groups=512, train_epochs=0, train_steps=(4, 3, 2, 4), infer_patterns=192,
    infer_repeats=2, scaling_patterns=(64, 256), quality_groups=256, quality_epochs=2,
    quality_test_patterns=192, gflops_repeats=5, cli_repeats=1, cli_patterns=(256,),
    refine_positions=1000, refine_iterations=15, refine_peer_iterations=15,
    refine_speed_iterations=6, refine_speed_repeats=2, refine_pinn_groups=256,
    refine_pinn_epochs=2, train_rss_patterns=(1000, 4000), train_rss_steps=20,
)

FULL = Settings(
    quick=False, train_groups=512, train_epochs=3, train_steps=(8, 6, 6, 8), infer_patterns=1024,
    infer_repeats=3, scaling_patterns=(1000, 4000, 16000, 64000), quality_groups=512,
    quality_epochs=10, quality_test_patterns=1024, gflops_repeats=5, cli_repeats=3,
    cli_patterns=(543, 1000),
    refine_positions=1000, refine_iterations=50, refine_peer_iterations=100,
    refine_speed_iterations=12, refine_speed_repeats=3, refine_pinn_groups=512,
    refine_pinn_epochs=5, train_rss_patterns=(1000, 16000, 64000), train_rss_steps=100,
)


def settings(quick: bool) -> Settings:
    """The settings of the chosen mode."""
    return QUICK if quick else FULL


def jobs(backends: tuple[str, ...], measures: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(measure, backend)`` pairs, backends interleaved inside each measure so that drift
    of a shared machine hits every backend alike. ``refine`` is followed by one worker of its
    peer (pty-chi, under :data:`PEER_BACKEND`), whatever the backends chosen."""
    out = []
    for m in measures:
        out += [(m, b) for b in backends]
        if m == "refine":
            out.append((PEER_MEASURE, PEER_BACKEND))
    return out
