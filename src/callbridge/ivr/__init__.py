"""IVR flows: a YAML flow language, its loader, and the per-call interpreter.

See docs/FLOWS.md for the file format.
"""

from pathlib import Path

from .flow import Flow, FlowWarning, PromptSpec
from .handoff import HandoffContext
from .io import CallInfo, FlowIO
from .loader import load_flow, load_flow_text
from .runner import FlowRunner
from .template import TemplateError, render, template_names

DEMO_FLOW_PATH = Path(__file__).parent / "flows" / "demo.yaml"

__all__ = [
    "CallInfo", "DEMO_FLOW_PATH", "Flow", "FlowIO", "FlowRunner", "FlowWarning", "HandoffContext", "PromptSpec",
    "TemplateError", "load_flow", "load_flow_text", "render", "template_names",
]
