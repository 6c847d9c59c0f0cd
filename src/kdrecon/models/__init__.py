"""Reconstruction networks and a name-based factory (``build_model("D5C5")``)."""

from kdrecon.models.dccnn import DCCNN, CNNBlock
from kdrecon.models.registry import build_model, count_parameters

__all__ = ["DCCNN", "CNNBlock", "build_model", "count_parameters"]
