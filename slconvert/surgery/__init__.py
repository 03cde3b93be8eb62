"""Model surgery: read a hybrid checkpoint, plan which attention layers become Superlinear, write the result.

`plan.py` reads and validates the source (config, architecture row, attention shapes, weights) and selects
layers; `convert.py` streams the new checkpoint into place; `summary.py` computes what `slconvert inspect`
shows (layer map, KV-cache size, attended keys per query).
"""

from .convert import convert
from .plan import ConversionPlan, SourceModel, open_source, parse_layer_list, plan_conversion
from .summary import summarize

__all__ = ["convert", "ConversionPlan", "SourceModel", "open_source", "parse_layer_list", "plan_conversion", "summarize"]
