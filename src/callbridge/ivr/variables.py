"""A call's variables: built-ins from the call, service settings, flow vars.

All values are strings, in one flat dictionary keyed by dotted names
(``caller.number``, ``sip.x-lang``, ``crm.account.tier``); templates look
names up there and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .model import Flow
from .io import CallInfo
from .loadcontext import BUILTIN_NAMES, SIP_PREFIX
from .template import is_variable_name, render

MAX_REPLY_VARIABLES = 200  # a huge webhook reply must not flood the call's variables


def preferred_language(flow: Flow, headers: Mapping[str, str]) -> str:
    """The X-Lang header's language if the flow offers it, else the default."""
    requested = next((value for name, value in headers.items() if name.lower() == "x-lang"), "")
    by_lower = {code.lower(): code for code in flow.languages}
    requested = requested.strip().lower()
    for candidate in (requested, requested.split("-")[0]):
        if candidate in by_lower:
            return by_lower[candidate]
    return flow.language


def initial_variables(flow: Flow, info: CallInfo) -> dict[str, str]:
    values = dict(flow.settings)
    values.update({
        "call_id": info.call_id,
        "caller.number": info.caller or "",
        "caller.name": info.caller_name or "",
        "called": info.called or "",
        "trunk": info.trunk or "",
    })
    for name, value in info.sip_headers.items():
        values[SIP_PREFIX + name.lower()] = value
    values["language"] = preferred_language(flow, info.sip_headers)
    for name, template in flow.variables.items():
        values[name] = render(template, values)
    return values


def flow_variables(flow: Flow, values: Mapping[str, str]) -> dict[str, str]:
    """The variables the flow itself set (not built-ins, headers or settings)."""
    return {name: value for name, value in values.items()
            if name not in BUILTIN_NAMES and not name.startswith(SIP_PREFIX) and name not in flow.settings}


def as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def flatten(prefix: str, reply: Mapping[str, object]) -> dict[str, str]:
    """``{"account": {"tier": "gold"}}`` under ``crm`` -> ``{"crm.account.tier": "gold"}``.

    Lists stay JSON text; keys that are not variable names are skipped, since
    no template could name them anyway.
    """
    out: dict[str, str] = {}
    pending: list[tuple[str, Mapping[str, object]]] = [(prefix, reply)]
    while pending and len(out) < MAX_REPLY_VARIABLES:
        base, mapping = pending.pop(0)
        for key, value in mapping.items():
            name = f"{base}.{key}"
            if not is_variable_name(name):
                continue
            if isinstance(value, dict):
                pending.append((name, value))
            elif len(out) < MAX_REPLY_VARIABLES:
                out[name] = as_text(value)
    return out


def dig(reply: Mapping[str, object], path: str) -> str:
    """The value at a dotted path (``account.tier``), '' if absent."""
    value: object = reply
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return ""
    return as_text(value)
