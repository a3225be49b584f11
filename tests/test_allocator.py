"""The malloc settings (ptycho_k3/allocator.py): when they apply, and that applying them works."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from ptycho_k3 import allocator


@pytest.mark.parametrize("env", [
    {"PTYCHO_K3_MALLOC": "default"},
    {"PTYCHO_K3_MALLOC": " Default "},
    {"MALLOC_ARENA_MAX_": "2"},
    {"MALLOC_MMAP_THRESHOLD_": "65536"},
    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
])
def test_user_settings_win(env):
    assert allocator.user_tuned(env)
    assert allocator.settings_for(env, "glibc") == ()


def test_defaults_apply_on_glibc_only():
    env = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512",
           "PTYCHO_K3_MALLOC": "tuned"}
    assert not allocator.user_tuned(env)
    assert allocator.settings_for(env, "glibc") == allocator.SETTINGS
    assert allocator.settings_for(env, "") == ()  # musl reports no name
    names = [name for name, _, _ in allocator.SETTINGS]
    assert names == ["M_MMAP_THRESHOLD", "M_TRIM_THRESHOLD", "M_TOP_PAD"]
    # mallopt takes a C int: every value must fit one.
    assert all(0 < value < 2**31 for _, _, value in allocator.SETTINGS)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_applies_once_in_a_fresh_process():
    code = (
        "import os; os.environ.pop('PTYCHO_K3_MALLOC', None)\n"
        "from ptycho_k3 import allocator\n"
        "first = allocator.tune({})\n"
        "second = allocator.tune({})\n"
        "print(sorted(first.items()), second)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = sorted((name, value) for name, _, value in allocator.SETTINGS)
    assert out.stdout.strip() == f"{expected} {{}}"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_large_blocks_are_reused_not_remapped():
    """After tuning, freeing and reallocating a 48 MiB block touches no new pages (it stays in
    the heap); with glibc's defaults (blocks above 32 MiB always mmap'd, unmapped on free) the
    same loop page-faults the whole block in every time."""
    code = (
        "import ctypes, resource, sys\n"
        "from ptycho_k3 import allocator\n"
        "if sys.argv[1] == 'tuned': allocator.tune({})\n"
        "libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = (ctypes.c_void_p,)\n"
        "n = 48 << 20\n"
        "def touch():\n"
        "    p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)\n"
        "touch(); touch()\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): touch()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
    )
    faults = {}
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                             check=True, env={"PATH": "/usr/bin:/bin"})
        faults[mode] = int(out.stdout.strip())
    pages = 5 * (48 << 20) // 4096
    assert faults["default"] > pages // 2, faults  # remapped: every page faulted in again
    assert faults["tuned"] < pages // 20, faults   # reused: (almost) none
