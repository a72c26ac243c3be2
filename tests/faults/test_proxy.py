"""The fault proxy itself, against a real echo server on loopback (fast, no cluster)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.proxy import FaultProxy, write_proxied_kubeconfig


class EchoServer:
    """Echoes every byte back; closes its side after the client's EOF."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", echo.port)) as p:
        yield p


def connect(proxy: FaultProxy, timeout: float = 5) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=timeout)
    sock.settimeout(timeout)
    return sock


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_passes_bytes_both_ways_intact(proxy: FaultProxy) -> None:
    payload = os.urandom(3 << 20)  # larger than any socket buffer: exercises partial writes
    with connect(proxy) as sock:
        got: list[bytes] = []
        reader = threading.Thread(
            target=lambda: got.append(b"".join(iter(lambda: sock.recv(65536), b""))),
            daemon=True,
        )
        reader.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # half-close travels through; the server then closes
        reader.join(20)
    assert hashlib.sha256(got[0]).digest() == hashlib.sha256(payload).digest()
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(payload)


def test_delay_adds_latency_per_direction(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert roundtrip(sock) == b"ping"
        proxy.delay(up=0.3, down=0.2)
        t0 = time.monotonic()
        assert roundtrip(sock) == b"ping"
        elapsed = time.monotonic() - t0
        assert 0.5 <= elapsed < 3.0, elapsed
        proxy.heal()
        t0 = time.monotonic()
        assert roundtrip(sock) == b"ping"
        assert time.monotonic() - t0 < 0.4


def test_drop_closes_new_connections_keeps_old_ones(proxy: FaultProxy) -> None:
    with connect(proxy) as old:
        assert roundtrip(old) == b"ping"
        proxy.drop()
        with connect(proxy) as new:
            assert new.recv(10) == b""  # closed by the proxy at once
        assert roundtrip(old, b"still") == b"still"
        proxy.heal()
        with connect(proxy) as again:
            assert roundtrip(again) == b"ping"
    assert proxy.stats.dropped == 1


def test_refuse_resets_existing_and_refuses_new_then_listens_again(proxy: FaultProxy) -> None:
    port = proxy.port
    with connect(proxy) as old:
        assert roundtrip(old) == b"ping"
        proxy.refuse()
        with pytest.raises(ConnectionResetError):
            roundtrip(old)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(proxy.address, timeout=2)
    proxy.heal()
    assert proxy.port == port
    with connect(proxy) as sock:
        assert roundtrip(sock) == b"ping"


def test_reset_mode_and_reset_all(proxy: FaultProxy) -> None:
    a, b = connect(proxy), connect(proxy)
    with a, b:
        assert roundtrip(a) == b"ping" and roundtrip(b) == b"ping"
        assert proxy.reset_all() == 2
        assert proxy.mode == "pass"
        for sock in (a, b):
            with pytest.raises(ConnectionResetError):
                roundtrip(sock)
    with connect(proxy) as c:
        assert roundtrip(c) == b"ping"  # reset_all is one-shot
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            roundtrip(c)
        # reset at connect or at the first read, whichever the RST reaches first
        with pytest.raises(ConnectionResetError), connect(proxy) as d:
            roundtrip(d)
    assert proxy.stats.resets == 4  # a, b, c and d at accept


def test_blackhole_answers_nothing_then_resumes_every_connection(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    with connect(proxy) as old:
        assert roundtrip(old) == b"ping"
        proxy.blackhole()
        old.settimeout(0.5)
        old.sendall(b"held")
        with pytest.raises(TimeoutError):
            old.recv(10)
        new = connect(proxy, timeout=0.5)  # accepted: the handshake completes
        with new:
            new.sendall(b"queued")
            with pytest.raises(TimeoutError):
                new.recv(10)
            assert echo.accepted == 1  # held: the server never heard of it
            proxy.heal()
            new.settimeout(5)
            old.settimeout(5)
            assert new.recv(10) == b"queued"  # nothing was lost, only held
            assert old.recv(10) == b"held"
    assert echo.accepted == 2


def test_fault_context_heals_on_error(proxy: FaultProxy) -> None:
    with contextlib.suppress(RuntimeError), proxy.fault("refuse"):
        raise RuntimeError("scenario failed mid-outage")
    assert proxy.mode == "pass"
    with connect(proxy) as sock:
        assert roundtrip(sock) == b"ping"


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(("10.0.0.1", 443))
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(("127.0.0.1", 443), listen_host="0.0.0.0")


def test_proxied_kubeconfig_points_every_cluster_at_the_proxy(
    proxy: FaultProxy, tmp_path: os.PathLike[str]
) -> None:
    import json
    from pathlib import Path

    src = Path(tmp_path) / "admin.kubeconfig"
    src.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n"
        "- name: c\n  cluster: {server: 'https://127.0.0.1:6443', certificate-authority: /ca.crt}\n"
        "users: []\ncontexts: []\n"
    )
    out = write_proxied_kubeconfig(src, Path(tmp_path) / "proxied", proxy)
    cfg = json.loads(Path(out).read_text())
    assert cfg["clusters"][0]["cluster"] == {
        "server": f"https://127.0.0.1:{proxy.port}",
        "certificate-authority": "/ca.crt",
    }
