"""Reconstruction networks and their registry (``build_model("D5C5")``, ``build_model("U2C5")``)."""

from kdrecon.models.cascade import CascadeNetwork
from kdrecon.models.dc_unet import DCUNet
from kdrecon.models.dccnn import DCCNN, CNNBlock
from kdrecon.models.registry import MODEL_FAMILIES, build_model, count_parameters

__all__ = ["CascadeNetwork", "DCCNN", "DCUNet", "CNNBlock", "MODEL_FAMILIES", "build_model", "count_parameters"]
