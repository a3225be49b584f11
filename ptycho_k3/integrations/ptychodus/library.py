"""The reconstructor library ptychodus lists as ``ptycho-k3``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ptychodus.api.reconstruct import Reconstructor, ReconstructorLibrary

from . import LIBRARY_NAME
from .reconstructors import build_reconstructors
from .settings import PtychoK3Settings


class PtychoK3ReconstructorLibrary(ReconstructorLibrary):
    """``ptycho-k3_PINN``, ``ptycho-k3_Supervised``, ``ptycho-k3_PINN-Refined``,
    ``ptycho-k3_Iterative``, configured by the ``PtychoK3`` settings group."""

    def __init__(self, settings_registry: Any, is_developer_mode_enabled: bool = False) -> None:
        super().__init__("ptycho_k3.ptychodus")
        self.settings = PtychoK3Settings(settings_registry)
        self._reconstructors = build_reconstructors(self.settings, self.get_logger())

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    def __iter__(self) -> Iterator[Reconstructor]:
        return iter(self._reconstructors)
