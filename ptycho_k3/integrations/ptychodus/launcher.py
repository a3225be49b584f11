"""``ptycho-k3-ptychodus``: ptychodus with the ptycho-k3 library, no change to its files.

ptychodus 1.7 builds its reconstructor libraries from a fixed list in ``ModelCore.__init__``
(``ptychodus.model.core``), which hands them to ``ProcessingCore``. :func:`install` replaces the
``ProcessingCore`` name in that module, in this process only, by a subclass that appends
:class:`~.library.PtychoK3ReconstructorLibrary`; then ptychodus's own ``main`` runs with the same
arguments (``-b train|reconstruct -i IN -o OUT``, ``-s settings.ini``, or the GUI).

``ptycho-k3-ptychodus --install-plugin`` instead writes a one-line module into ptychodus's
``plugins/`` directory that calls :func:`install` when ptychodus loads its plugins, so a plain
``ptychodus`` lists the library too (``--remove-plugin`` deletes it).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import LIBRARY_NAME

PLUGIN_MODULE = "ptycho_k3_reconstructors.py"
PLUGIN_TEXT = ('"""Adds the ptycho-k3 reconstructor library (written by ptycho-k3-ptychodus '
               '--install-plugin)."""\n'
               "from ptycho_k3.integrations.ptychodus.plugin import register_plugins  # noqa: F401\n")


def install() -> None:
    """Make ptychodus's ``ModelCore`` include the ptycho-k3 library (idempotent)."""
    import ptychodus.model.core as core

    if getattr(core.ProcessingCore, "adds_ptycho_k3", False):
        return
    base = core.ProcessingCore

    class ProcessingCoreWithPtychoK3(base):  # type: ignore[misc, valid-type]
        adds_ptycho_k3 = True

        def __init__(self, task_manager: Any, settings_registry: Any, product_api: Any,
                     algorithm_libraries: Sequence[Any]) -> None:
            from .library import PtychoK3ReconstructorLibrary

            libraries = list(algorithm_libraries)
            if not any(lib.name == LIBRARY_NAME for lib in libraries):
                libraries.append(PtychoK3ReconstructorLibrary(settings_registry))
            super().__init__(task_manager, settings_registry, product_api, libraries)

    core.ProcessingCore = ProcessingCoreWithPtychoK3


def plugin_path() -> Path:
    """Where ``--install-plugin`` writes the hook: ptychodus's installed ``plugins/``."""
    import ptychodus

    return Path(ptychodus.__file__).resolve().parent / "plugins" / PLUGIN_MODULE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ptychodus's command line, plus ``--install-plugin`` / ``--remove-plugin``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        import ptychodus  # noqa: F401
    except ModuleNotFoundError:
        print("ptycho-k3-ptychodus: ptychodus is not installed (pip install "
              "'ptycho-k3[ptychodus]')", file=sys.stderr)
        return 2
    if args in (["--install-plugin"], ["--remove-plugin"]):
        from ptycho_k3.atomic import atomic_write

        path = plugin_path()
        if args[0] == "--install-plugin":
            atomic_write(path, lambda fh: fh.write(PLUGIN_TEXT), mode="w")
            print(f"wrote {path}")
        elif path.exists():
            path.unlink()
            print(f"removed {path}")
        return 0
    install()
    from ptychodus.__main__ import main as ptychodus_main

    saved, sys.argv = sys.argv, ["ptychodus", *args]  # ptychodus parses sys.argv itself
    try:
        return int(ptychodus_main() or 0)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
