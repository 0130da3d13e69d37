"""TCP_NODELAY on the Bedrock connections the CRT transport opens.

awscrt's ``SocketOptions`` has no TCP_NODELAY, so its sockets run Nagle's
algorithm: a write waits while an earlier one is unacknowledged, and the
server's delayed ACK (40 ms on Linux) then holds each caller-audio event that
follows a small write (a WINDOW_UPDATE, say) for up to 40 ms. Measured on
loopback: about half of the 256 ms events arrived 33-44 ms after the SDK's
``send`` returned; with NODELAY, 1 ms. That delay hides the caller's end of
turn from the model, and audio written inside it is lost when Bedrock ends the
stream. The CRT gives no handle on its socket, so this finds the process's own
TCP sockets to the endpoint's port in ``/proc/self/fd`` (Linux) and sets the
option on them; elsewhere it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

_FD_DIR = "/proc/self/fd"
_SOCKET_LINK = "socket:["
_done: set[str] = set()  # socket inodes already seen; a socket's inode is fixed for its life
_MAX_REMEMBERED = 65536


def set_nodelay_to_port(port: int) -> int:
    """Set TCP_NODELAY on every TCP socket of this process connected to ``port``; returns how many."""
    if not os.path.isdir(_FD_DIR):
        return 0
    if len(_done) > _MAX_REMEMBERED:
        _done.clear()  # closed sockets' inodes; re-checking live ones is harmless
    changed = 0
    for name in os.listdir(_FD_DIR):
        try:
            link = os.readlink(f"{_FD_DIR}/{name}")
        except OSError:
            continue  # closed meanwhile
        if not link.startswith(_SOCKET_LINK) or link in _done:
            continue
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                _done.add(link)
                continue
            peer = sock.getpeername()
            if peer[1] == port:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _done.add(link)
                changed += 1
        except OSError:
            pass  # not connected (yet): looked at again next time
        finally:
            sock.close()  # closes only the duplicate
    return changed
