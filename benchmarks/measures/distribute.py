"""Data-parallel training throughput (``--distribute data_parallel``) at 1, 2 and 4 devices.

JAX only (Keras 3's distribution API is complete only there): under TensorFlow and PyTorch the
measure writes one "skipped" record. Under JAX it starts one child process per device count D
(``XLA_FLAGS=--xla_force_host_platform_device_count=D``, which must be set before JAX is
imported), each running real epochs of :func:`ptycho_k3.train.train` (N64 gs1, batch 16, as the
``train N64_gs1`` rows) with ``distribute=data_parallel``; the one-device child also runs
``distribute=none``, the baseline. groups/s = groups trained an epoch / median epoch seconds,
the first (compiling) epoch dropped; validation and the data pipeline included. Full mode runs
the children twice, in the order 1, 2, 4, 4, 2, 1 devices, and reports the mean of the two, so
a load that drifts during the run (a shared machine) favours no device count.

The D devices are virtual CPU devices that share this machine's cores, so on a CPU-only machine
this measures what sharding and the all-reduce cost, not a speed-up; on several GPUs the same
runs would measure the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Record, median
from benchmarks.plan import Settings, settings

DEVICE_COUNTS = (1, 2, 4)
N, GRIDSIZE, BATCH = 64, 1, 16
STATUS = "distribute status"


def _note(cores: int) -> str:
    return (f"virtual CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count) sharing "
            f"this machine's {cores} cores: this measures the overhead of sharding each batch "
            "and all-reducing the gradients, not a speed-up")


def run(settings: Settings, backend: str) -> list[Record]:
    """Records of groups/s at every device count, and each count's throughput against none."""
    if backend != "jax":
        return [Record(backend, STATUS, None, "", {
            "skipped": True, "note": "--distribute data_parallel needs the jax backend "
                                     "(Keras 3's distribution API is complete only for JAX)"})]
    cores = os.cpu_count() or 1
    note = _note(cores)
    print(f"distribute: {note}", file=sys.stderr, flush=True)
    order = DEVICE_COUNTS if settings.quick else DEVICE_COUNTS + DEVICE_COUNTS[::-1]
    rows: dict[tuple[str, int], dict] = {}
    for devices in order:
        for row in _run_child(devices, settings.quick):
            key = (row["mode"], devices)
            if key in rows:  # the second pass: the mean of both, both kept
                first = rows[key]
                rows[key] = {**row, "groups_per_s": (first["groups_per_s"] + row["groups_per_s"]) / 2,
                             "passes_groups_per_s": [first["groups_per_s"], row["groups_per_s"]],
                             "epoch_seconds": [first["epoch_seconds"], row["epoch_seconds"]]}
            else:
                rows[key] = row
    base = rows[("none", 1)]["groups_per_s"]
    out = []
    for (mode, devices), row in rows.items():
        cfg = {**row, "note": note, "cores": cores}
        label = "none (1 device)" if mode == "none" else \
            f"data_parallel {devices} virtual device{'s' if devices > 1 else ''}"
        out.append(Record(backend, f"distribute {label} groups/s", row["groups_per_s"],
                          "groups/s", cfg))
        if mode != "none":
            out.append(Record(backend, f"distribute {label} / none", row["groups_per_s"] / base,
                              "x", {**cfg, "what": "throughput relative to --distribute none; "
                                    "< 1 is the overhead of sharding on shared cores"}))
    return out


def _run_child(devices: int, quick: bool) -> list[dict]:
    flags = os.environ.get("XLA_FLAGS", "")
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip()}
    env = {k: v for k, v in env.items() if not k.startswith("KERAS_DISTRIBUTION_")}
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-dist-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "benchmarks.measures.distribute", "--devices", str(devices),
               "--out", str(out)] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2])
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"distribute child ({devices} devices) exited {proc.returncode}:\n"
                               f"{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def _child(devices: int, quick: bool) -> list[dict]:
    """In a process with ``devices`` virtual devices: train and time every mode."""
    from ptycho_k3.backend import activate, skip_unused_frameworks

    skip_unused_frameworks(activate("jax"))
    from benchmarks.workload import simulated_scan
    from ptycho_k3 import distribute
    from ptycho_k3.config import ModelConfig, TrainingConfig
    from ptycho_k3.train import train

    s = settings(quick)
    groups, epochs = (128, 3) if quick else (s.train_groups, 3)
    modes = ("none", "data_parallel") if devices == 1 else ("data_parallel",)
    plan = distribute.setup("data_parallel")  # before JAX computes anything
    if plan.n_devices != devices:
        raise RuntimeError(f"expected {devices} devices, JAX has {plan.n_devices}")
    scan = simulated_scan(N, groups)
    rows = []
    for mode in modes:
        cfg = TrainingConfig(model=ModelConfig(N=N, gridsize=GRIDSIZE), batch_size=BATCH,
                             nepochs=epochs, n_groups=groups, early_stopping_patience=epochs + 1,
                             seed=0, distribute=mode)
        result = train(cfg, scan, verbose=0)
        shards = distribute.setup(mode)
        n_train = len(result.train_indices)
        trained = (n_train // BATCH) * BATCH + shards.usable(n_train % BATCH)
        seconds = median(result.epoch_seconds[1:])
        rows.append({"mode": mode, "devices": devices, "groups_per_s": trained / seconds,
                     "seconds_per_epoch": seconds, "groups_trained_per_epoch": trained,
                     "epoch_seconds": [round(t, 3) for t in result.epoch_seconds],
                     "N": N, "gridsize": GRIDSIZE, "batch_size": BATCH, "n_groups": groups,
                     "method": f"ptycho_k3.train.train, {epochs} epochs, first dropped, median"})
        print(f"distribute {mode} on {devices} device(s): {trained / seconds:.1f} groups/s "
              f"({seconds:.2f} s/epoch)", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one device count of the distribute measure")
    ap.add_argument("--devices", type=int, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.write_text(json.dumps(_child(args.devices, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
