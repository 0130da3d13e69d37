"""Which ``Host`` and ``Origin`` values the HTTP API answers to: the defence against DNS rebinding and CSRF.

A page on another site can make a browser send requests to our port (CSRF), and
a name that the attacker re-points at 127.0.0.1 lets its scripts read the answers
too (DNS rebinding). Both carry a name that is not ours, so:

- ``Host`` (RFC 9110 §7.2) must be one of our names with our port: the server's
  ``host`` and ``public_host``, the loopback names when we listen on loopback or on
  every address, the address the connection arrived on, or an ``api.allowed_hosts``
  entry (``name`` for any port, ``name:port`` for one).
- ``Origin`` (RFC 6454 §7), when a browser sends one, must name one of those hosts
  over http(s), or be listed in ``api.allowed_origins``. ``null`` (sandboxed frames,
  files) never is.

Pure functions and a frozen policy: no sockets, no config imports.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
DEFAULT_PORTS = {"http": 80, "https": 443}
_PORT = re.compile(r"[0-9]{1,5}")
# RFC 3986 §3.2.2 reg-name, as far as DNS names go: letters, digits, '-', '.', '_'.
_NAME = re.compile(r"[a-z0-9_.-]+")


def normalise_host(host: str) -> str | None:
    """A lower-case name or canonical IP literal (no brackets), or None when it is neither."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    host = host.removesuffix(".")  # "localhost." is "localhost" (RFC 1034 §3.1)
    return host if host and _NAME.fullmatch(host) else None


def parse_authority(text: str) -> tuple[str, int | None] | None:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (normalised host, port or None); None if malformed."""
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        host_part, rest = text[:close + 1], text[close + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            return None  # an IPv6 literal must be bracketed (RFC 3986 §3.2.2)
        host_part, _, port_text = text.partition(":")
        port_text = port_text if ":" in text else None
    host = normalise_host(host_part)
    if host is None or (host_part.startswith("[") and ":" not in host):
        return None
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        return None
    return host, int(port_text)


def parse_origin(text: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` -> (scheme, host, port with the scheme's default filled in); None otherwise."""
    scheme, sep, authority = text.strip().lower().partition("://")
    if not sep or scheme not in DEFAULT_PORTS or not authority or "/" in authority or "@" in authority:
        return None
    parsed = parse_authority(authority)
    if parsed is None:
        return None
    host, port = parsed
    return scheme, host, DEFAULT_PORTS[scheme] if port is None else port


def _origin_key(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class HostPolicy:
    own_names: frozenset[str]  # accepted with the port the connection arrived on
    extra_hosts: frozenset[tuple[str, int | None]]  # api.allowed_hosts; None = any port
    extra_origins: frozenset[str]  # api.allowed_origins, as _origin_key

    @classmethod
    def for_server(cls, host: str, public_host: str | None = None, allowed_hosts: list[str] | tuple = (),
                   allowed_origins: list[str] | tuple = ()) -> "HostPolicy":
        names = {normalise_host(name) for name in (host, public_host) if name and name not in WILDCARD_HOSTS}
        if host in WILDCARD_HOSTS or _is_loopback(host):
            # Listening on loopback (or everywhere, loopback included): this machine's own names reach us.
            names.update(LOOPBACK_NAMES)
        extra_hosts = set()
        for entry in allowed_hosts:
            parsed = parse_authority(entry)
            if parsed is None:
                raise ValueError(f"{entry!r} is not a host name or host:port")
            extra_hosts.add(parsed)
        extra_origins = set()
        for entry in allowed_origins:
            origin = parse_origin(entry)
            if origin is None:
                raise ValueError(f"{entry!r} is not an origin like https://dashboard.example or http://host:8080")
            extra_origins.add(_origin_key(*origin))
        return cls(frozenset(n for n in names if n), frozenset(extra_hosts), frozenset(extra_origins))

    def host_allowed(self, host_header: str | None, local: tuple[str, int] | None) -> bool:
        """Is this ``Host`` one of ours? ``local`` is the (address, port) the connection arrived on."""
        if host_header is None:
            return False
        parsed = parse_authority(host_header)
        if parsed is None:
            return False
        return self._allowed(*parsed, default_port=DEFAULT_PORTS["http"], local=local)

    def origin_allowed(self, origin: str, local: tuple[str, int] | None) -> bool:
        parsed = parse_origin(origin)  # "null" and anything odd fail here
        if parsed is None:
            return False
        scheme, host, port = parsed
        if _origin_key(scheme, host, port) in self.extra_origins:
            return True
        return self._allowed(host, port, default_port=DEFAULT_PORTS[scheme], local=local)

    def _allowed(self, host: str, port: int | None, *, default_port: int, local: tuple[str, int] | None) -> bool:
        effective = default_port if port is None else port
        if (host, None) in self.extra_hosts or (host, effective) in self.extra_hosts:
            return True
        if local is None:
            return False
        local_host, local_port = normalise_host(str(local[0])), local[1]
        # The address the client connected to is an IP literal: no DNS name, so nothing to rebind.
        return effective == local_port and (host in self.own_names or host == local_host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["HostPolicy", "parse_authority", "parse_origin", "normalise_host"]
