"""The flow API in one place: the loaded model and the functions that load it.

The model lives in :mod:`.model` and the loading in :mod:`.loader`; this
module only gathers them so callers need one import.
"""

from .loader import load_flow, load_flow_text
from .model import Flow, FlowWarning, PromptSpec

__all__ = ["Flow", "FlowWarning", "PromptSpec", "load_flow", "load_flow_text"]
