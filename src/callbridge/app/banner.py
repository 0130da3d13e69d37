"""What ``callbridge serve`` prints once it is ready: where the console is, and two ways to call.

The one-click sign-in link carries the API token in its fragment (``/login#token=...``: browsers
never send a fragment to the server or in a Referer). A token is a password, so the link is printed
only to a terminal, or when the token was just generated (it is printed then anyway, once); a
server whose stdout goes to a log gets the plain ``/login`` and where to find the token. The logs
themselves never carry it.
"""

from __future__ import annotations

import sys
from typing import TextIO
from urllib.parse import quote

from .auth import ApiToken
from .config import Config
from .origins import WILDCARD_HOSTS

LABEL_WIDTH = 23
LOOPBACK = "127.0.0.1"  # what a browser on this machine uses when we listen on every address


def url_host(host: str) -> str:
    host = LOOPBACK if host in WILDCARD_HOSTS else host
    return f"[{host}]" if ":" in host else host


def call_number(config: Config) -> str:
    """A number that reaches the default flow: a routed one if the config has any, else the flow's name."""
    routing = config.routing
    for number, flow in routing.numbers.items():
        if flow == routing.default_flow:
            return number
    if routing.numbers and routing.unknown_number == "reject":
        return next(iter(routing.numbers))
    return routing.default_flow  # every number reaches the default flow


def banner_lines(config: Config, *, sip_port: int, sip_tls_port: int | None, http_port: int, token: ApiToken,
                 show_token: bool) -> list[str]:
    server = config.server
    host = url_host(server.public_host or server.host)
    console = f"http://{host}:{http_port}"
    if show_token:
        login = f"{console}/login#token={quote(token.value, safe='')}   (signs you in: keep it private)"
    elif token.path is not None:
        login = f"{console}/login   (the API token is in {token.path})"
    else:
        login = f"{console}/login   (the API token is api.token in the config)"
    sip = f"sip:{quote(call_number(config), safe='+-_.~')}@{host}:{sip_port}"
    lines = [
        f"callbridge ready: SIP udp/tcp {server.host}:{sip_port}"
        + (f", tls :{sip_tls_port}" if sip_tls_port else "") + f"; HTTP http://{server.host}:{http_port}",
        "",
        f"  {'Console':<{LABEL_WIDTH}}{login}",
        f"  {'Call from a browser':<{LABEL_WIDTH}}{console}/phone",
        f"  {'Call from a SIP phone':<{LABEL_WIDTH}}{sip}",
        "",
        "  Ctrl-C stops taking calls and exits when the last one ends; a second Ctrl-C ends them now.",
    ]
    return lines


def print_banner(config: Config, *, sip_port: int, sip_tls_port: int | None, http_port: int, token: ApiToken,
                 stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    show_token = token.created or bool(getattr(out, "isatty", lambda: False)())
    lines = banner_lines(config, sip_port=sip_port, sip_tls_port=sip_tls_port, http_port=http_port, token=token,
                         show_token=show_token)
    print("\n".join(lines), file=out, flush=True)


__all__ = ["banner_lines", "call_number", "print_banner", "url_host"]
