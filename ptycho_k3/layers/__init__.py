"""Keras layers wrapping ``ptycho_k3.physics``; each is registered serialisable (package
``ptycho_k3``) with a complete ``get_config``. Complex values travel as ``(re, im)`` float32 pairs.
"""

from .border_mask import BorderMask, decoded_support
from .conv2d import Conv2D
from .far_field import FarField
from .intensity_scale import IntensityScale
from .object_canvas import ObjectCanvas
from .patch_extraction import PatchExtraction
from .pi_tanh import PiTanh
from .polar_object import PolarToComplex
from .probe_illumination import ProbeIllumination
from .slice_channels import SliceChannels
from .trim_object import TrimObject

__all__ = [
    "BorderMask",
    "Conv2D",
    "FarField",
    "IntensityScale",
    "ObjectCanvas",
    "PatchExtraction",
    "PiTanh",
    "PolarToComplex",
    "ProbeIllumination",
    "SliceChannels",
    "TrimObject",
    "decoded_support",
]
