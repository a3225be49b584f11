"""Shared helpers of the benchmark workers: records, timing, peak memory, machine facts.

Nothing here imports Keras, so the orchestrator (``run.py``) stays framework-free.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Record:
    """One number of one backend: the unit of ``results/latest.json``."""

    backend: str
    measure: str
    value: float | None
    unit: str
    config: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    if not values:
        raise ValueError("median of no samples")
    return float(statistics.median(values))


def repeat_timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return the wall times (s).

    ``fn`` must finish its work before returning (sync any asynchronous backend inside it).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not found in /proc/self/status")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``VmHWM``), MiB."""
    return _status_kib("VmHWM") / 1024.0


def current_rss_mib() -> float:
    """Current resident set size (``VmRSS``), MiB."""
    return _status_kib("VmRSS") / 1024.0


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty when unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_average() -> float:
    """One-minute load average (a sign of other work on a shared machine)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def _cpu_jiffies() -> list[int] | None:
    try:
        with open("/proc/stat") as fh:
            return [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def other_work(seconds: float = 1.0) -> dict[str, float] | None:
    """Share of the machine's CPU time busy, and stolen by the hypervisor, over ``seconds``.

    Sampled from ``/proc/stat`` while none of the benchmark's own workers runs, so unlike the
    load average (a one-minute decaying mean, still ~1 per busy core a minute after the previous
    worker ended) it measures only other work: ``busy`` = non-idle / all jiffies over the window
    (0..1 of all cores), ``steal`` = time the virtual cores waited for the physical ones (other
    tenants of the host). None where ``/proc/stat`` is unavailable.
    """
    first = _cpu_jiffies()
    time.sleep(seconds)
    second = _cpu_jiffies()
    if first is None or second is None:
        return None
    delta = [b - a for a, b in zip(first, second, strict=False)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    if total <= 0:
        return None
    idle = delta[3] + delta[4]
    return {"busy": (total - idle) / total, "steal": delta[7] / total}


def machine_info() -> dict[str, Any]:
    """Facts that make numbers comparable: CPU, cores, memory, bf16 support, env switches."""
    flags = cpu_flags()
    try:
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        mem_kib = 0
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_gib": round(mem_kib / 2**20, 1),
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "python": platform.python_version(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset)"),
    }
