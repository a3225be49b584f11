"""glibc ``malloc`` settings that keep large tensor buffers in the process between calls.

Why: every forward pass allocates and frees activations of 8-34 MB (a batch of 32 at N = 64:
``32 x 64 x 64 x 64`` float32 = 32 MiB). With glibc's defaults a block that size is served by a
fresh ``mmap`` and returned to the kernel on ``free``, and blocks below the (dynamic) mmap
threshold are trimmed from the heap top as soon as 2x the threshold is free, so the next call
touches brand-new pages: tens of thousands of page faults (each a zero-filled 4 KiB page) per
forward pass. Measured on the 2-core AVX-512 machine, inference model, batch 32, N 64 gs1
(``benchmarks/measures/gflops.py``): PyTorch 50-68k -> ~1 minor fault per pass, system time 0.10 -> 0.00
s per pass; JAX 48k -> 21k faults; TensorFlow, whose CPU allocator already pools, ~100
faults either way. PyTorch's and XLA's CPU allocators call ``malloc`` directly, so this is the
one place to fix it for every backend.

What: :data:`SETTINGS` via ``mallopt``: ``M_MMAP_THRESHOLD`` fixed at 256 MiB (above the largest
activation of a batch of 32 at N = 128; fixing it also turns off glibc's dynamic threshold, which
is capped at 32 MiB, just below a ``32 x 64 x 64 x 64`` float32 tensor), ``M_TRIM_THRESHOLD``
1 GiB (mallopt takes a C ``int``) and ``M_TOP_PAD`` 256 MiB. Freed memory stays in the heap for
the next batch instead of going back to the kernel, so the resident size stays at the working
set's peak (it does not grow beyond it: the heap reuses its free blocks).

Nothing is changed when the C library is not glibc, or when the user already tunes malloc
(any ``MALLOC_*_`` variable or ``glibc.malloc`` in ``GLIBC_TUNABLES``), or when
``PTYCHO_K3_MALLOC=default``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from collections.abc import Mapping

_log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

#: ``(name, mallopt parameter, value in bytes)`` applied by :func:`tune`.
SETTINGS: tuple[tuple[str, int, int], ...] = (
    ("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, 256 << 20),
    ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, 1 << 30),
    ("M_TOP_PAD", M_TOP_PAD, 256 << 20),
)
#: Environment variable that turns the tuning off (value ``default``).
OPT_OUT = "PTYCHO_K3_MALLOC"

_applied = False


def user_tuned(env: Mapping[str, str]) -> bool:
    """Whether the environment already sets malloc parameters (then they win)."""
    if env.get(OPT_OUT, "").strip().lower() == "default":
        return True
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        return True
    return any(k.startswith("MALLOC_") and k.endswith("_") for k in env)


def settings_for(env: Mapping[str, str], libc: str) -> tuple[tuple[str, int, int], ...]:
    """The settings :func:`tune` would apply for this environment and C library.

    Args:
        env: environment mapping.
        libc: the C library's name as ``platform.libc_ver()[0]`` reports it (``"glibc"``).
    """
    if libc != "glibc" or user_tuned(env):
        return ()
    return SETTINGS


def tune(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Apply :func:`settings_for` to this process once; returns ``{name: value}`` applied.

    Safe to call more than once and before or after any framework is imported (``mallopt``
    changes how later allocations are served).
    """
    global _applied
    if _applied:
        return {}
    env = os.environ if env is None else env
    settings = settings_for(env, platform.libc_ver()[0])
    if not settings:
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt: leave it as it is
        return {}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    applied = {name: value for name, param, value in settings if mallopt(param, value) == 1}
    _applied = True
    _log.debug("malloc settings: %s", applied)
    return applied
