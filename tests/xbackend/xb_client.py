"""The parent side: one long-lived :mod:`xb_worker` per backend, every request sent to all.

Requests go to the three workers before any reply is read, so the backends compute side by
side. A worker that errors fails the example (hypothesis then shrinks it); a worker that dies
fails the run with its stderr. Each reply is checked to come from the backend it was sent to.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BACKENDS = ("tensorflow", "torch", "jax")
WORKER = Path(__file__).resolve().parent / "xb_worker.py"


class WorkerPool:
    """Three worker processes, started once; :meth:`call` returns ``{backend: result}``."""

    def __init__(self, backends: tuple[str, ...] = BACKENDS) -> None:
        self.backends = backends
        self.calls = 0
        self._log = tempfile.TemporaryDirectory(prefix="xb_")
        self.procs: dict[str, subprocess.Popen] = {}
        for b in backends:
            env = dict(os.environ, KERAS_BACKEND=b, TF_CPP_MIN_LOG_LEVEL="2",
                       TF_ENABLE_ONEDNN_OPTS=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0"),
                       XB_TMP=self._log.name)
            err = open(Path(self._log.name) / f"{b}.stderr", "wb")  # noqa: SIM115
            self.procs[b] = subprocess.Popen([sys.executable, str(WORKER)], env=env,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=err)

    def stderr(self, backend: str) -> str:
        path = Path(self._log.name) / f"{backend}.stderr"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _send(self, backend: str, req: dict[str, Any]) -> None:
        data = pickle.dumps(req, protocol=pickle.HIGHEST_PROTOCOL)
        proc = self.procs[backend]
        proc.stdin.write(struct.pack("<Q", len(data)) + data)
        proc.stdin.flush()

    def _receive(self, backend: str) -> dict[str, Any]:
        proc = self.procs[backend]
        head = proc.stdout.read(8)
        if len(head) < 8:
            raise RuntimeError(f"{backend} worker died:\n{self.stderr(backend)}")
        (size,) = struct.unpack("<Q", head)
        return pickle.loads(proc.stdout.read(size))

    def call(self, req: dict[str, Any], backends: tuple[str, ...] | None = None
             ) -> dict[str, Any]:
        """Send ``req`` to ``backends`` (default all) and return their results by backend.

        Raises AssertionError naming the backend if a worker reports an error.
        """
        targets = backends or self.backends
        self.calls += 1
        for b in targets:
            self._send(b, req)
        replies = {b: self._receive(b) for b in targets}
        errors = []
        for b, reply in replies.items():
            assert reply["backend"] == b, f"the {b} worker ran {reply['backend']}"
            if "error" in reply:
                errors.append(f"--- {b} ---\n{reply['error']}")
        assert not errors, "worker error(s):\n" + "\n".join(errors)
        return {b: reply["result"] for b, reply in replies.items()}

    def close(self) -> None:
        for b, proc in self.procs.items():
            try:
                self._send(b, {"op": "exit"})
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
        self._log.cleanup()
