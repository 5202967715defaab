"""Stage 1 — models: spec string → :class:`ModelHandle`; components → parameter slices; saving."""

from circuitforge.models.handle import ModelHandle
from circuitforge.models.hf import clone, from_hf
from circuitforge.models.loading import load
from circuitforge.models.saving import save
from circuitforge.models.weights import ParamSlice, component_params, linear_weight_count, parse_node

__all__ = ["ModelHandle", "clone", "ParamSlice", "component_params", "from_hf", "linear_weight_count", "load", "parse_node", "save"]
