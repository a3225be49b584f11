"""Hold-out reconstruction quality over initialisation seeds, per backend: luck or backend?

Run: ``.venv/bin/python -m benchmarks.seed_spread`` (``--help`` for the budget options). The
default budget is the issue's configuration at half its groups: N 64, gridsize 2,
n_filters_scale 2, batch 16, 10 epochs of 256 groups (the issue: 512), seeds 0 1 2 on each
backend plus 2 shared-initialisation runs, 11 trainings (about 25 min on 2 idle cores;
``--n_groups 512`` is the issue's exact budget).

1. One process simulates the data once, so every run sees identical arrays: the experimental
   LCLS probe and object of ``tests/fixtures/lcls_probe_object.npz``; a training scan of
   ``--train_positions`` uniform random positions and a hold-out scan of ``--test_positions``
   *other* random positions (independent draw and Poisson noise), same object, ``--nphotons``.
2. For every seed, every backend in turn (interleaved, so a shared machine's drift hits all
   alike), a fresh process started like a command (one framework) runs
   :func:`ptycho_k3.train.train` (N 64, ``--gridsize``, ``--n_filters_scale``, ``--n_groups``,
   ``--batch_size``, ``--epochs``, ``seed``), reconstructs the hold-out scan with
   :func:`ptycho_k3.infer.reconstruct` and scores it with :func:`ptycho_k3.metrics.evaluate`
   (M 20), as ``benchmarks/measures/quality.py`` does.
3. Same initial weights (``--shared_init_seeds``, default seed 0): the other backends train
   again from the very weights the first backend drew for that seed (set by a callback when
   training begins; same batches, since the batch order is NumPy-seeded). What differs then is
   only float32 rounding, amplified over the run; what differs between seeds is the draw.
4. Writes ``benchmarks/results/seed_spread.json`` (settings, every run, per-backend summary) and
   ``seed_spread.md`` (per backend: mean, min, max of amplitude and phase SSIM over seeds, and
   the shared-initialisation runs).

The seed fixes everything random in training (grouping, split, batch order, initial weights),
but each framework draws different initial weights from the same seed, so the same seed on two
backends is two independent initialisations; only the spread over seeds says how much of a gap
between backends is luck.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import load_average

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "lcls_probe_object.npz"
RESULTS = ROOT / "benchmarks" / "results"
BACKENDS = ("tensorflow", "torch", "jax")
#: The numbers that raised the question (ptycho-train --N 64 --gridsize 2 --n_groups 512
#: --batch_size 16 --nepochs 10 --seed 0, one run per backend): amplitude, phase SSIM.
ISSUE = {"tensorflow": (0.39, 0.59), "torch": (0.48, 0.78), "jax": (0.41, 0.59)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10, help="training epochs (the issue: 10)")
    ap.add_argument("--n_groups", type=int, default=256, help="training groups (the issue: 512)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--gridsize", type=int, default=2)
    ap.add_argument("--n_filters_scale", type=int, default=2)
    ap.add_argument("--train_positions", type=int, default=1024)
    ap.add_argument("--test_positions", type=int, default=1024)
    ap.add_argument("--nphotons", type=float, default=1e9)
    ap.add_argument("--data_seed", type=int, default=0, help="seed of positions and noise")
    ap.add_argument("--shared_init_seeds", nargs="*", type=int, default=[0],
                    help="seeds whose first-backend initial weights the other backends also "
                         "train from (none: skip)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of seed_spread.json/.md")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: one run
    ap.add_argument("--simulate", type=Path, help=argparse.SUPPRESS)  # internal: the data
    return ap.parse_args(argv)


def _start_like_a_command() -> str:
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    from ptycho_k3.backend import activate, skip_unused_frameworks

    skip_unused_frameworks(activate(backend))
    return backend


def simulate(args: argparse.Namespace, folder: Path) -> None:
    """Training and hold-out scans of the LCLS object (different random positions)."""
    _start_like_a_command()
    import numpy as np

    from ptycho_k3.data import random_positions, save_npz, simulate_dataset

    with np.load(FIXTURE) as f:
        probe, obj = f["probe"], f["object"]
    r_train, r_test = (np.random.default_rng(s)
                       for s in np.random.SeedSequence(args.data_seed).spawn(2))
    for name, rng, count in (("train", r_train, args.train_positions),
                             ("test", r_test, args.test_positions)):
        x, y = random_positions(count, obj.shape, probe.shape[0], rng)
        scan = simulate_dataset(obj, probe, x, y, args.nphotons, rng,
                                metadata={"simulation": {"object": "lcls fixture", "split": name,
                                                         "data_seed": args.data_seed}})
        save_npz(folder / f"{name}.npz", scan)


def run_one(job: dict) -> dict:
    """Train under this process's backend, reconstruct the hold-out scan, score it."""
    backend = _start_like_a_command()
    from ptycho_k3.config import ModelConfig, TrainingConfig
    from ptycho_k3.data import load_npz
    from ptycho_k3.infer import reconstruct
    from ptycho_k3.metrics import evaluate
    from ptycho_k3.train import train

    data = Path(job["data"])
    train_scan, test_scan = load_npz(data / "train.npz"), load_npz(data / "test.npz")
    cfg = TrainingConfig(
        model=ModelConfig(N=64, gridsize=job["gridsize"], n_filters_scale=job["n_filters_scale"]),
        batch_size=job["batch_size"], nepochs=job["epochs"], n_groups=job["n_groups"],
        nphotons=job["nphotons"], seed=job["seed"],
    )
    callbacks = []
    if job.get("save_init") or job.get("load_init"):
        callbacks.append(initial_weights_callback(job.get("save_init"), job.get("load_init")))
    t0 = time.perf_counter()
    result = train(cfg, train_scan, verbose=0, callbacks=callbacks)
    train_s = time.perf_counter() - t0
    rec = reconstruct(result.models, test_scan, input_scale=result.input_scale, batch_size=32,
                      keep_patches=False)
    metrics = evaluate(rec.stitched, test_scan.object, positions=rec.centres, M=20)
    return {
        "backend": backend, "seed": job["seed"], "init": job.get("init_from") or backend,
        "amplitude_ssim": metrics["amplitude"]["ssim"], "phase_ssim": metrics["phase"]["ssim"],
        "amplitude_frc50": metrics["amplitude"]["frc50"], "phase_frc50": metrics["phase"]["frc50"],
        "final_loss": result.history["loss"][-1], "final_val_loss": result.history["val_loss"][-1],
        "epochs_run": result.epochs_run, "train_seconds": round(train_s, 1),
        "history": {k: result.history[k] for k in ("loss", "val_loss", "learning_rate")},
        "test_groups": int(rec.grouped.n_groups),
    }


def initial_weights_callback(save: str | None, load: str | None):
    """A Keras callback that, when training begins, saves the model's initial weights to
    ``save`` and/or replaces them by those in ``load`` (checked by variable path)."""
    import keras
    import numpy as np

    class InitialWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            weights = self.model.weights
            if save:
                np.savez(save, paths=np.array([v.path for v in weights]),
                         **{f"w{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(weights)})
            if load:
                with np.load(load) as f:
                    if list(f["paths"]) != [v.path for v in weights]:
                        raise RuntimeError("shared initial weights: variable paths differ")
                    for i, v in enumerate(weights):
                        v.assign(f[f"w{i}"])

    return InitialWeights()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _spawn(backend: str, flag: str, path: Path, argv: list[str]) -> None:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "benchmarks.seed_spread", *argv, flag, str(path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} {flag} failed:\n{proc.stderr[-4000:]}")


def summarise(runs: list[dict], backends: list[str]) -> dict:
    out = {}
    for bk in backends:
        mine = [r for r in runs if r["backend"] == bk]
        out[bk] = {}
        for key in ("amplitude_ssim", "phase_ssim"):
            vals = [r[key] for r in mine]
            out[bk][key] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals),
                            "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                            "by_seed": {str(r["seed"]): r[key] for r in mine}}
    pooled = {}
    for key in ("amplitude_ssim", "phase_ssim"):
        vals = [r[key] for r in runs]
        pooled[key] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals),
                       "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    out["all runs"] = pooled
    return out


def markdown(settings: dict, runs: list[dict], summary: dict, backends: list[str],
             shared_runs: list[dict]) -> str:
    s = settings
    lines = [
        "# Hold-out quality over initialisation seeds, per backend",
        "",
        f"- run: {s['date']}, {s['minutes']:.1f} min, commit {s['commit'] or '?'}"
        f"{' (library files modified)' if s['tree_modified'] else ''}, "
        f"`{' '.join(['python -m benchmarks.seed_spread', *s['argv']])}`",
        f"- data: LCLS probe and object (tests/fixtures/lcls_probe_object.npz), "
        f"{s['nphotons']:.0e} photons; trained on {s['train_positions']} random positions, "
        f"scored on {s['test_positions']} *other* random positions of the same object "
        "(independent noise)",
        f"- training: `ptycho_k3.train.train`, N 64, gridsize {s['gridsize']}, n_filters_scale "
        f"{s['n_filters_scale']}, {s['n_groups']} groups, batch {s['batch_size']}, "
        f"**epochs {s['epochs']}**, seeds {s['seeds']}; scored with "
        "`ptycho_k3.metrics.evaluate` (M 20)",
        f"- machine load average {s['load_start']:.1f} -> {s['load_end']:.1f} on "
        f"{os.cpu_count()} cores; TF_ENABLE_ONEDNN_OPTS={s['onednn']}",
        "",
        "| backend | amplitude SSIM mean | min | max | phase SSIM mean | min | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for bk in [*backends, "all runs"]:
        a, p = summary[bk]["amplitude_ssim"], summary[bk]["phase_ssim"]
        lines.append(f"| {bk} | {a['mean']:.3f} | {a['min']:.3f} | {a['max']:.3f} | "
                     f"{p['mean']:.3f} | {p['min']:.3f} | {p['max']:.3f} |")
    lines += ["", "Every run (amplitude / phase SSIM; final training loss, epochs run (early stopping "
              "may end sooner), training wall time):", "",
              "| seed | " + " | ".join(backends) + " |", "|---|" + "---|" * len(backends)]
    for seed in s["seeds"]:
        cells = []
        for bk in backends:
            r = next(r for r in runs if r["backend"] == bk and r["seed"] == seed)
            cells.append(f"{r['amplitude_ssim']:.3f} / {r['phase_ssim']:.3f} "
                         f"(loss {r['final_loss']:.3g}, {r['epochs_run']} ep, "
                         f"{r['train_seconds']:.0f} s)")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    if shared_runs:
        first = backends[0]
        lines += ["", f"Same initial weights: the other backends trained from the weights {first} "
                  "drew for the seed (same batches; only float32 rounding differs):", "",
                  "| seed | " + " | ".join(backends) + " |", "|---|" + "---|" * len(backends)]
        for seed in sorted({r["seed"] for r in shared_runs}):
            ref = next(r for r in runs if r["backend"] == first and r["seed"] == seed)
            cells = []
            for bk in backends:
                r = ref if bk == first else next(
                    r for r in shared_runs if r["backend"] == bk and r["seed"] == seed)
                cells.append(f"{r['amplitude_ssim']:.3f} / {r['phase_ssim']:.3f} "
                             f"(loss {r['final_loss']:.3g})")
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += ["", "The issue's single runs (10 epochs, seed 0, its own hold-out scan): "
              + ", ".join(f"{bk} {a:.2f} / {p:.2f}" for bk, (a, p) in ISSUE.items()) + "."]
    return "\n".join(lines) + "\n"


def orchestrate(args: argparse.Namespace, argv: list[str]) -> None:
    t0 = time.perf_counter()
    load_start = load_average()
    commit = _git("rev-parse", "--short", "HEAD")  # at the start: others may commit meanwhile
    modified = bool(_git("status", "--porcelain", "--", "ptycho_k3", "physics"))
    runs = []
    with tempfile.TemporaryDirectory(prefix="seed_spread_") as tmp:
        tmp = Path(tmp)
        _spawn(args.backends[0], "--simulate", tmp, argv)
        first = args.backends[0]
        shared_runs = []

        def one(bk: str, seed: int, **extra) -> dict:
            job = {"data": str(tmp), "seed": seed, "epochs": args.epochs,
                   "n_groups": args.n_groups, "batch_size": args.batch_size,
                   "gridsize": args.gridsize, "n_filters_scale": args.n_filters_scale,
                   "nphotons": args.nphotons, **extra}
            job_path = tmp / f"job_{bk}_{seed}_{'shared' if 'load_init' in extra else 'own'}.json"
            job_path.write_text(json.dumps(job))
            _spawn(bk, "--worker", job_path, argv)
            run = json.loads(job_path.with_suffix(".out.json").read_text())
            print(f"seed {seed} {bk:10s} (init: {run['init']:10s}): amplitude SSIM "
                  f"{run['amplitude_ssim']:.3f}, phase SSIM {run['phase_ssim']:.3f} "
                  f"({run['train_seconds']:.0f} s)", flush=True)
            return run

        for seed in args.seeds:
            for bk in args.backends:
                save = (str(tmp / f"init_{seed}.npz")
                        if bk == first and seed in args.shared_init_seeds else None)
                runs.append(one(bk, seed, **({"save_init": save} if save else {})))
        for seed in args.shared_init_seeds:
            if seed not in args.seeds:
                runs.append(one(first, seed, save_init=str(tmp / f"init_{seed}.npz")))
            for bk in args.backends[1:]:
                shared_runs.append(one(bk, seed, load_init=str(tmp / f"init_{seed}.npz"),
                                       init_from=first))
    settings = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "minutes": (time.perf_counter() - t0) / 60, "argv": argv, "seeds": args.seeds,
        "epochs": args.epochs, "n_groups": args.n_groups, "batch_size": args.batch_size,
        "gridsize": args.gridsize, "n_filters_scale": args.n_filters_scale,
        "train_positions": args.train_positions, "test_positions": args.test_positions,
        "nphotons": args.nphotons, "data_seed": args.data_seed,
        "load_start": load_start, "load_end": load_average(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset)"),
        "commit": commit, "tree_modified": modified,
    }
    summary = summarise([r for r in runs if r["seed"] in args.seeds], args.backends)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seed_spread.json").write_text(json.dumps(
        {"settings": settings, "issue": ISSUE, "summary": summary, "runs": runs,
         "shared_init_runs": shared_runs}, indent=1))
    (args.out / "seed_spread.md").write_text(
        markdown(settings, runs, summary, args.backends, shared_runs))
    print(f"wrote {args.out / 'seed_spread.md'} and seed_spread.json")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.simulate is not None:
        simulate(args, args.simulate)
    elif args.worker is not None:
        job = json.loads(args.worker.read_text())
        args.worker.with_suffix(".out.json").write_text(json.dumps(run_one(job)))
    else:
        orchestrate(args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
