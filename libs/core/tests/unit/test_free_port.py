"""Free ports for the services a test or `raftloop up` starts."""

from __future__ import annotations

import socket

from raftloop_core.embedded import free_port


def test_a_process_never_gets_the_same_free_port_twice() -> None:
    # A port is released before its service binds it: handing it out twice put two services on
    # one port, and one answered the other's readiness check.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # and each is bindable
