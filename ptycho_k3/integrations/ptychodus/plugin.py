"""The ``ptychodus/plugins/`` hook: ptychodus imports every module there and calls its
``register_plugins(registry)`` early in ``ModelCore.__init__``, before the reconstructor
libraries are built; this one only calls :func:`.launcher.install`."""

from __future__ import annotations

from typing import Any


def register_plugins(registry: Any) -> None:
    """ptychodus's plugin hook; ``registry`` is not used (there is no reconstructor registry)."""
    from .launcher import install

    install()
