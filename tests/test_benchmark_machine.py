"""The benchmark runner's measure of other work on the machine (benchmarks/common.py).

The header of every results table says how busy the machine was with work other than the
benchmark's own; the numbers come from two ``/proc/stat`` samples one window apart.
"""

from __future__ import annotations

import pytest

from benchmarks import common


def test_busy_and_steal_are_shares_of_the_window(monkeypatch):
    # jiffies: user nice system idle iowait irq softirq steal guest guest_nice
    samples = iter([[100, 0, 50, 1000, 10, 0, 5, 20, 7, 0],
                    [160, 0, 70, 1100, 20, 0, 5, 40, 9, 0]])
    monkeypatch.setattr(common, "_cpu_jiffies", lambda: next(samples))
    monkeypatch.setattr(common.time, "sleep", lambda s: None)
    seen = common.other_work(1.0)
    # window: user 60, system 20, idle 100, iowait 10, steal 20 -> 210 jiffies, 110 idle
    assert seen == pytest.approx({"busy": 100 / 210, "steal": 20 / 210})


def test_no_proc_stat_means_no_reading(monkeypatch):
    monkeypatch.setattr(common, "_cpu_jiffies", lambda: None)
    monkeypatch.setattr(common.time, "sleep", lambda s: None)
    assert common.other_work(1.0) is None
