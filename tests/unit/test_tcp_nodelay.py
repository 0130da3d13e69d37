"""TCP_NODELAY is set on this process's sockets to a given port, and on nothing else."""

from __future__ import annotations

import socket

from callbridge.agent.providers.tcp_nodelay import set_nodelay_to_port


def _nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_sets_nodelay_on_connections_to_the_port_only() -> None:
    with socket.create_server(("127.0.0.1", 0)) as target, socket.create_server(("127.0.0.1", 0)) as other:
        port = target.getsockname()[1]
        to_target = socket.create_connection(("127.0.0.1", port))
        to_other = socket.create_connection(other.getsockname())
        try:
            assert not _nodelay(to_target) and not _nodelay(to_other)  # the kernel's default: Nagle on
            assert set_nodelay_to_port(port) == 1
            assert _nodelay(to_target)
            assert not _nodelay(to_other)
            assert set_nodelay_to_port(port) == 0  # already done: not counted again
        finally:
            to_target.close()
            to_other.close()
