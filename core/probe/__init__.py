"""The layer similarity probe: capture hidden states while sampling, compare them, group them, draw them.

``capture`` (the observer and per-evaluation bookkeeping), ``similarity`` (cosine accumulators,
token subsets), ``groups`` (contiguous grouping), ``report`` (JSON report and panels),
``heatmap`` (Pillow rendering). Plain torch, numpy and Pillow; nothing here imports ComfyUI.
"""

from .capture import Measured, Probe, check_single_order
from .similarity import AGGREGATES, ProbeError

PROBE_WRAPPER_KEY = "dit_layer_lab_probe"

__all__ = ["AGGREGATES", "Measured", "PROBE_WRAPPER_KEY", "Probe", "ProbeError", "check_single_order"]
