"""The Via header at the transport boundary (RFC 3261 §18.2, RFC 3581).

Where a request really came from (``received``/``rport``), and where its responses go.
"""

from __future__ import annotations

from typing import Any

from .address import is_reliable
from .grammar import split_quoted
from .headers import Headers
from .message import Request


def response_destination(request: Request, source: Any) -> Any:
    """Where responses go (RFC 3261 §18.2.2 with RFC 3581 §4 rport).

    Streams answer on the connection the request came in on. Datagrams go to
    the source address when the client asked for rport; otherwise to the
    source IP and the Via port (the address it told us it listens on).
    """
    if is_reliable(source):
        return source
    via = request.top_via
    if "rport" in via.params or via.port is None:
        return source
    if via.port == getattr(source, "port", None):
        return source
    return type(source)(source.host, via.port, source.transport) if hasattr(source, "host") else source


def stamp_received(request: Request, source: Any) -> None:
    """Add ``received``/``rport`` to the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
    vias = request.headers.get_all("Via")
    if not vias or not hasattr(source, "host"):
        return
    top = request.top_via
    changed = False
    if top.host != source.host:
        top.params["received"] = source.host
        changed = True
    if "rport" in top.params:
        top.params["rport"] = str(source.port)
        top.params.setdefault("received", source.host)
        changed = True
    if not changed:
        return
    # Rewrite only the first value of the first Via line; later hops stay verbatim.
    parts = split_quoted(vias[0], ",")
    parts[0] = str(top)
    items = list(request.headers)
    for index, (name, _) in enumerate(items):
        if name == "Via":
            items[index] = (name, ", ".join(part.strip() for part in parts))
            break
    request.headers = Headers(items)
