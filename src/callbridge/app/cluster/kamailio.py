"""Kamailio's config for `callbridge cluster`: the template filled in with validated values only.

The template (kamailio.cfg.tmpl beside this file) is Kamailio's own language: a config string that
reached it unchecked could add routing logic (a quote and a newline are enough). So every value is
rebuilt from a parsed form (an IP address, an int, a network, a path of plain characters) before it
is written, and a value that cannot be rebuilt is refused with a clear error.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .keys import WORKER_ID

TEMPLATE_NAME = "kamailio.cfg.tmpl"
DISPATCHER_SET = 1
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
# Absolute paths of plain characters: nothing Kamailio's parser or a shell would read specially.
SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@=,-]*$")
# The same rule as ServerConfig.source_header: a header token, nothing that ends the string.
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{2,64}$")
# sun_path holds 108 bytes with the NUL; Kamailio needs room for its own suffixes too.
MAX_UNIX_SOCKET_PATH = 100
KAMAILIO_CHILDREN = 2  # UDP and TCP receivers: enough for a one-machine cluster on 2 cores

CFG_NAME = "kamailio.cfg"
LIST_NAME = "dispatcher.list"
CTL_NAME = "ctl.sock"
PID_NAME = "kamailio.pid"


class ProxyConfigError(ValueError):
    """A value that cannot be put in Kamailio's config safely."""


@dataclass(frozen=True)
class Worker:
    """One dispatcher destination: the worker's id and where the proxy reaches its SIP."""

    worker_id: str
    host: str
    sip_port: int

    @property
    def sip_uri(self) -> str:
        return f"sip:{host_port(self.host, self.sip_port)}"


@dataclass(frozen=True)
class ProxySettings:
    host: str  # the one address Kamailio listens on and sends from (the workers' trusted proxy)
    sip_port: int
    workers: tuple[Worker, ...]
    runtime_dir: Path  # config, dispatcher list, ctl socket and pid file live here
    source_header: str
    exempt_cidrs: tuple[str, ...]  # inbound trunks' allowed_cidrs: never flood-limited
    flood_requests: int
    flood_window_s: int


@dataclass(frozen=True)
class ProxyFiles:
    config: Path
    dispatcher_list: Path
    ctl_socket: Path
    pid_file: Path


def concrete_ip(host: str, what: str = "host") -> str:
    """``host`` as a canonical IP address; a name or a wildcard address is refused."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ProxyConfigError(f"{what} {host!r} must be an IP address (Kamailio and the workers bind it)") from None
    if address.is_unspecified:
        raise ProxyConfigError(f"{what} {host!r} is a wildcard: give the one address the proxy listens on, "
                               "so workers know whose source header to trust")
    return str(address)


def host_port(host: str, port: int) -> str:
    address = ipaddress.ip_address(host)
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _port(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ProxyConfigError(f"{what} {value!r} is not a port (1-65535)")
    return value


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProxyConfigError(f"{what} {value!r} must be a positive whole number")
    return value


def _path(path: Path, what: str) -> str:
    text = str(path)
    if not SAFE_PATH.match(text) or "/../" in text + "/":
        raise ProxyConfigError(f"{what} {text!r} must be an absolute path of letters, digits and _ . / + @ = , - "
                               "(choose a --data-dir without spaces or quotes)")
    return text


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ProxyConfigError(f"{value!r} is not an IP network") from None


def proxy_files(runtime_dir: Path) -> ProxyFiles:
    return ProxyFiles(runtime_dir / CFG_NAME, runtime_dir / LIST_NAME, runtime_dir / CTL_NAME,
                      runtime_dir / PID_NAME)


def exempt_rules(cidrs: Iterable[str]) -> str:
    """One is_in_subnet test per network (ipops), each normalised by ipaddress first."""
    lines: list[str] = []
    for cidr in dict.fromkeys(_network(c) for c in cidrs):
        lines += [f'\tif (is_in_subnet("$si", "{cidr}")) {{', "\t\t$var(exempt) = 1;", "\t\treturn;", "\t}"]
    return "\n".join(lines)


def fill(template: str, values: Mapping[str, str]) -> str:
    """Every {{NAME}} replaced; a name without a value, or a value no placeholder uses, is a bug here."""
    used: set[str] = set()

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ProxyConfigError(f"the Kamailio template uses {{{{{name}}}}}, which has no value")
        used.add(name)
        return values[name]

    text = PLACEHOLDER.sub(value, template)
    unused = set(values) - used
    if unused:
        raise ProxyConfigError(f"the Kamailio template lacks {sorted(unused)}")
    return text


def render_config(settings: ProxySettings, template: str | None = None) -> str:
    host = concrete_ip(settings.host)
    port = _port(settings.sip_port, "SIP port")
    files = proxy_files(settings.runtime_dir)
    ctl = _path(files.ctl_socket, "Kamailio's ctl socket")
    if len(ctl) > MAX_UNIX_SOCKET_PATH:
        raise ProxyConfigError(f"Kamailio's ctl socket path {ctl} is longer than {MAX_UNIX_SOCKET_PATH} "
                               "characters (a unix socket limit): choose a shorter --data-dir")
    if not HEADER_NAME.match(settings.source_header):
        raise ProxyConfigError(f"source header {settings.source_header!r} is not a header name")
    values = {
        "CHILDREN": str(KAMAILIO_CHILDREN),
        "RUNTIME_DIR": _path(settings.runtime_dir, "Kamailio's runtime dir"),
        "LISTEN_UDP": f"udp:{host_port(host, port)}",
        "LISTEN_TCP": f"tcp:{host_port(host, port)}",
        "CTL_SOCKET": ctl,
        "DS_LIST_FILE": _path(files.dispatcher_list, "the dispatcher list"),
        "PING_FROM": f"sip:proxy@{host_port(host, port)}",
        "PIKE_UNIT": str(_positive(settings.flood_window_s, "flood window")),
        "PIKE_DENSITY": str(_positive(settings.flood_requests, "flood requests")),
        "SOURCE_HEADER": settings.source_header,
        "EXEMPT_RULES": exempt_rules(settings.exempt_cidrs),
    }
    return fill(template if template is not None else load_template(), values)


def render_dispatcher_list(workers: Iterable[Worker]) -> str:
    """``setid uri flags priority attrs`` per worker; duid names it in dispatcher.list."""
    lines = ["# setid destination flags priority attributes (generated by callbridge cluster)"]
    for worker in workers:
        if not WORKER_ID.match(worker.worker_id):
            raise ProxyConfigError(f"worker id {worker.worker_id!r} is not a plain name")
        uri = f"sip:{host_port(concrete_ip(worker.host, 'worker host'), _port(worker.sip_port, 'worker SIP port'))}"
        lines.append(f"{DISPATCHER_SET} {uri} 0 0 duid={worker.worker_id}")
    return "\n".join(lines) + "\n"


def load_template() -> str:
    return resources.files(__package__).joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def write_proxy_files(settings: ProxySettings) -> ProxyFiles:
    """Render both files into the runtime dir (created, mode 0700: the ctl socket is an admin door)."""
    config = render_config(settings)
    listing = render_dispatcher_list(settings.workers)
    files = proxy_files(settings.runtime_dir)
    settings.runtime_dir.mkdir(parents=True, exist_ok=True)
    settings.runtime_dir.chmod(0o700)
    files.config.write_text(config, encoding="utf-8")
    files.dispatcher_list.write_text(listing, encoding="utf-8")
    return files


def kamailio_command(binary: str, files: ProxyFiles, shm_mb: int = 64, pkg_mb: int = 8) -> list[str]:
    """Foreground (-DD), logging to stderr (-E), our pid file; never the system service's config."""
    return [binary, "-f", str(files.config), "-DD", "-E", "-P", str(files.pid_file),
            "-m", str(shm_mb), "-M", str(pkg_mb)]


def kamcmd_command(binary: str, files: ProxyFiles, *args: str) -> list[str]:
    return [binary, "-s", f"unix:{files.ctl_socket}", *args]


# dispatcher.list (binrpc, as kamcmd prints it): "URI: sip:..." then "FLAGS: AP" per destination.
_URI_LINE = re.compile(r"^\s*URI:\s*(\S+)\s*$")
_FLAGS_LINE = re.compile(r"^\s*FLAGS:\s*([A-Z]+)\s*$")


def parse_dispatcher_states(output: str) -> dict[str, str]:
    """destination URI -> flags from kamcmd's output: state (A active, I inactive, D disabled, T trying)
    then P (probed with OPTIONS) or X (not probed yet)."""
    states: dict[str, str] = {}
    uri: str | None = None
    for line in output.splitlines():
        if match := _URI_LINE.match(line):
            uri = match.group(1)
        elif (match := _FLAGS_LINE.match(line)) and uri is not None:
            states[uri] = match.group(1)
            uri = None
    return states


def is_up(flags: str) -> bool:
    """Active and probed: "AP". "AX" is active only because no probe has been sent yet."""
    return flags == "AP"
