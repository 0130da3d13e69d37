"""What `callbridge cluster` checks before and while starting: free ports, Redis, workers, the proxy's view."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterable

import httpx

from .kamailio import ProxyFiles, kamcmd_command, parse_dispatcher_states
from .procs import StartError

PROBE_TIMEOUT_S = 2.0
REDIS_PING = b"*1\r\n$4\r\nPING\r\n"
REDIS_PONG = b"+PONG"
KAMCMD_TIMEOUT_S = 5.0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port(host: str, port: int, kind: socket.SocketKind, what: str) -> None:
    """StartError naming the port when something listens there already."""
    with socket.socket(_family(host), kind) as probe:
        if kind == socket.SOCK_STREAM:
            # As the servers will: a TIME_WAIT left by an earlier run is no conflict.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            proto = "TCP" if kind == socket.SOCK_STREAM else "UDP"
            raise StartError(f"port {port}/{proto} on {host} {reason}: needed for {what}; stop what holds it or "
                             "choose other ports (--sip-port, --http-port, cluster.redis_port)") from None


def check_ports(host: str, tcp: Iterable[tuple[int, str]], udp: Iterable[tuple[int, str]],
                loopback_tcp: Iterable[tuple[int, str]] = ()) -> None:
    for port, what in tcp:
        check_port(host, port, socket.SOCK_STREAM, what)
    for port, what in udp:
        check_port(host, port, socket.SOCK_DGRAM, what)
    for port, what in loopback_tcp:
        check_port("127.0.0.1", port, socket.SOCK_STREAM, what)


async def redis_answers(port: int) -> bool:
    """PING over RESP (the protocol's own health check) on loopback."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(REDIS_PING)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT_S)
        return line.startswith(REDIS_PONG)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def worker_ready(client: httpx.AsyncClient, api_url: str) -> bool:
    """GET /healthz says ok: started, not draining, not full."""
    try:
        response = await client.get(f"{api_url}/healthz", timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError:
        return False
    try:
        return response.status_code == 200 and response.json().get("status") == "ok"
    except ValueError:
        return False


async def kamcmd(kamcmd_binary: str, files: ProxyFiles, *args: str) -> str:
    """Run one RPC over the ctl socket; StartError on failure (the proxy is not up, or refused)."""
    process = await asyncio.create_subprocess_exec(*kamcmd_command(kamcmd_binary, files, *args),
                                                   stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), KAMCMD_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise StartError(f"kamcmd {' '.join(args)} did not answer in {KAMCMD_TIMEOUT_S:.0f} s") from None
    text = output.decode("utf-8", errors="replace")
    if process.returncode != 0:
        raise StartError(f"kamcmd {' '.join(args)} failed: {text.strip()[:300]}")
    return text


async def dispatcher_states(kamcmd_binary: str, files: ProxyFiles) -> dict[str, str]:
    """Each worker URI's dispatcher flags as the proxy sees them now (AP up, IP down, DX disabled...)."""
    return parse_dispatcher_states(await kamcmd(kamcmd_binary, files, "dispatcher.list"))
