"""One PtychoPINN model definition: ``build_model(config)`` -> (training model, inference model)."""

from .builder import ModelPair, build_model
from .ptycho_model import PtychoModel

__all__ = ["ModelPair", "PtychoModel", "build_model"]
