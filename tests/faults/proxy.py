"""A loopback TCP proxy that injects network faults between a client and a server.

The operator talks to kube-apiserver through it (its kubeconfig's ``server`` is the proxy), so a
test can take the API server away *from the operator only* while the controllers, kwok and the
test itself keep using it directly. TLS passes through untouched: the proxy listens on 127.0.0.1,
which is in the API server certificate's SANs, so the client verifies the real server.

Modes (``set_mode``; each takes effect before the call returns):

``pass``       forward both ways (with the ``delay`` set, if any)
``drop``       close every new connection at once (FIN); existing connections keep working
``refuse``     stop listening (connect gets ECONNREFUSED) and reset every existing connection:
               what clients see while an API server process is down or restarting
``reset``      reset (RST) every existing connection and every new one as soon as it is accepted
``blackhole``  a network partition: nothing is read or written on any connection; new
               connections are accepted (the kernel completes the handshake) and held. Bytes are
               held, not discarded, so once the mode changes back every connection continues
               where it stopped, as TCP retransmission would make it after a real partition

``reset_all()`` resets the existing connections once without changing the mode, and
``delay(up=, down=)`` delays each chunk by a fixed latency per direction (client to server is
"up"); data already in flight keeps the delay it was read with.

Everything runs in one selector loop thread (no socket is touched by two threads), bounded in
connections and buffered bytes, and only on loopback addresses.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["pass", "drop", "refuse", "reset", "blackhole"]
MODES: tuple[Mode, ...] = ("pass", "drop", "refuse", "reset", "blackhole")

_EOF = b""  # a queued EOF: shut down the write side once everything before it is sent
_MAX_BUFFERED = 4 << 20  # stop reading a direction while this much is queued
_TICK = 0.02  # loop wake-up bound: how late a mode change or a delayed chunk can be


@dataclass
class ProxyStats:
    accepted: int = 0  # connections accepted (including dropped / reset ones)
    dropped: int = 0  # closed at accept (drop mode)
    resets: int = 0  # connections reset by the proxy (reset, refuse, reset_all)
    bytes_up: int = 0  # client -> server bytes delivered
    bytes_down: int = 0  # server -> client bytes delivered


@dataclass
class _Pipe:
    """One direction of a connection."""

    src: socket.socket
    dst: socket.socket
    up: bool
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    queued: int = 0
    pending: bytes = b""
    eof_read: bool = False
    eof_sent: bool = False

    def head_due(self) -> float | None:
        if self.pending:
            return 0.0
        return self.queue[0][0] if self.queue else None


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket | None = None
    pipes: list[_Pipe] = field(default_factory=list)
    closed: bool = False

    def connect(self, upstream: socket.socket) -> None:
        self.upstream = upstream
        self.pipes = [_Pipe(self.client, upstream, True), _Pipe(upstream, self.client, False)]

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


def _rst(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """``FaultProxy(("127.0.0.1", api_port)).start()``; ``.port`` is where clients connect."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen_host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 256,
    ) -> None:
        if not listen_host.startswith("127.") or not upstream[0].startswith("127."):
            raise ValueError("the fault proxy only listens on and connects to loopback addresses")
        self.upstream = upstream
        self.listen_host = listen_host
        self.max_connections = max_connections
        self.stats = ProxyStats()
        self._mode: Mode = "pass"
        self._delay = (0.0, 0.0)  # (up, down) seconds
        self._requested_port = port
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[_Conn] = []
        self._commands: deque[tuple[Callable[[], None], threading.Event]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._listen()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for conn in self._conns:
            self._close(conn, reset=True, count=False)
        self._conns.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_host, self.port)

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``: the API server seen through the proxy."""
        return f"https://{self.listen_host}:{self.port}"

    # -- faults ----------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def connections(self) -> int:
        """Open connections (held ones included)."""
        return len(self._conns)

    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        self._call(lambda: self._apply_mode(mode))

    def heal(self) -> None:
        """Back to ``pass`` with no delay."""

        def heal() -> None:
            self._apply_mode("pass")
            self._set_delay(0.0, 0.0)

        self._call(heal)

    def blackhole(self) -> None:
        self.set_mode("blackhole")

    def drop(self) -> None:
        self.set_mode("drop")

    def refuse(self) -> None:
        self.set_mode("refuse")

    def reset(self) -> None:
        self.set_mode("reset")

    def reset_all(self) -> int:
        """RST every open connection once; returns how many."""
        box: list[int] = []
        self._call(lambda: box.append(self._reset_existing()))
        return box[0]

    def delay(self, up: float = 0.0, down: float = 0.0) -> None:
        if up < 0 or down < 0:
            raise ValueError("delays are non-negative")
        self._call(lambda: self._set_delay(up, down))

    @contextlib.contextmanager
    def fault(self, mode: Mode) -> Iterator[FaultProxy]:
        """``with proxy.fault("blackhole"): time.sleep(30)`` -- healed afterwards, whatever
        happens inside."""
        self.set_mode(mode)
        try:
            yield self
        finally:
            self.heal()

    # -- the loop (the only thread that touches sockets once started) ---------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        if self._thread is None or not self._thread.is_alive():
            if self._error is not None:
                raise RuntimeError("fault proxy loop died") from self._error
            fn()  # not started (or stopped): nothing runs concurrently
            return
        done = threading.Event()
        with self._lock:
            self._commands.append((fn, done))
        if not done.wait(5):
            raise TimeoutError("fault proxy loop did not take the command")

    def _set_delay(self, up: float, down: float) -> None:
        self._delay = (up, down)

    def _apply_mode(self, mode: Mode) -> None:
        self._mode = mode
        if mode in ("refuse", "reset"):
            self._reset_existing()
        if mode == "refuse":
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        elif self._listener is None:
            self._listen()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = self.port or self._requested_port
        for attempt in range(50):
            try:
                sock.bind((self.listen_host, port))
                break
            except OSError:
                if attempt == 49 or not port:
                    sock.close()
                    raise
                time.sleep(0.02)  # the old listener's port is being released
        sock.listen(128)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        self._listener = sock

    def _reset_existing(self) -> int:
        n = 0
        for conn in list(self._conns):
            self._close(conn, reset=True)
            n += 1
        self._conns = [c for c in self._conns if not c.closed]
        return n

    def _close(self, conn: _Conn, reset: bool, count: bool = True) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in conn.sockets():
            if reset:
                _rst(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
        if reset and count:
            self.stats.resets += 1

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
        except BaseException as exc:  # pragma: no cover - surfaced by the next command
            self._error = exc
            raise

    def _step(self) -> None:
        with self._lock:
            commands = list(self._commands)
            self._commands.clear()
        for fn, done in commands:
            try:
                fn()
            finally:
                done.set()
        frozen = self._mode == "blackhole"
        if not frozen:
            for conn in self._conns:
                if conn.upstream is None and not conn.closed:
                    self._open_upstream(conn)
        self._conns = [c for c in self._conns if not c.closed]
        now = time.monotonic()
        interest: dict[int, int] = {}  # fd -> poll flags (poll, not select: no FD_SETSIZE cap)
        timeout = _TICK
        if self._listener is not None:
            interest[self._listener.fileno()] = select.POLLIN
        if not frozen:
            for conn in self._conns:
                for pipe in conn.pipes:
                    if not pipe.eof_read and pipe.queued < _MAX_BUFFERED:
                        fd = pipe.src.fileno()
                        interest[fd] = interest.get(fd, 0) | select.POLLIN
                    due = pipe.head_due()
                    if due is not None:
                        if due <= now:
                            fd = pipe.dst.fileno()
                            interest[fd] = interest.get(fd, 0) | select.POLLOUT
                        else:
                            timeout = min(timeout, due - now)
        poller = select.poll()
        for fd, flags in interest.items():
            if fd >= 0:
                poller.register(fd, flags)
        ready_r: set[int] = set()
        ready_w: set[int] = set()
        for fd, ev in poller.poll(max(0.0, timeout) * 1000):
            # errors and hang-ups count as readable: the next recv reports them
            if ev & (select.POLLIN | select.POLLERR | select.POLLHUP):
                ready_r.add(fd)
            if ev & (select.POLLOUT | select.POLLERR):
                ready_w.add(fd)
        if self._listener is not None and self._listener.fileno() in ready_r:
            self._accept()
        if frozen:
            return
        now = time.monotonic()
        for conn in list(self._conns):
            for pipe in conn.pipes:
                if conn.closed:
                    break
                if not pipe.eof_read and pipe.src.fileno() in ready_r:
                    self._read(conn, pipe, now)
                if not conn.closed and pipe.dst.fileno() in ready_w:
                    self._write(conn, pipe, time.monotonic())
            if not conn.closed and conn.pipes and all(p.eof_sent for p in conn.pipes):
                self._close(conn, reset=False)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.stats.accepted += 1
            if self._mode == "drop" or len(self._conns) >= self.max_connections:
                self.stats.dropped += 1
                client.close()
                continue
            if self._mode == "reset":
                self.stats.resets += 1
                _rst(client)
                continue
            client.setblocking(False)
            conn = _Conn(client)
            self._conns.append(conn)
            if self._mode != "blackhole":
                self._open_upstream(conn)

    def _open_upstream(self, conn: _Conn) -> None:
        if self._mode == "drop":
            self._close(conn, reset=False)
            return
        if self._mode in ("reset", "refuse"):
            self._close(conn, reset=True)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            self._close(conn, reset=True)  # as the server's own refusal would look
            return
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.connect(upstream)

    def _read(self, conn: _Conn, pipe: _Pipe, now: float) -> None:
        try:
            data = pipe.src.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer: pass the reset on
            self._close(conn, reset=True, count=False)
            return
        delay = self._delay[0] if pipe.up else self._delay[1]
        if not data:
            pipe.eof_read = True
        pipe.queue.append((now + delay, data))
        pipe.queued += len(data)

    def _write(self, conn: _Conn, pipe: _Pipe, now: float) -> None:
        while True:
            if not pipe.pending:
                if not pipe.queue or pipe.queue[0][0] > now:
                    return
                _, chunk = pipe.queue.popleft()
                pipe.queued -= len(chunk)
                if chunk is _EOF or not chunk:
                    with contextlib.suppress(OSError):
                        pipe.dst.shutdown(socket.SHUT_WR)
                    pipe.eof_sent = True
                    return
                pipe.pending = chunk
            try:
                sent = pipe.dst.send(pipe.pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn, reset=True, count=False)
                return
            if pipe.up:
                self.stats.bytes_up += sent
            else:
                self.stats.bytes_down += sent
            pipe.pending = pipe.pending[sent:]
            if pipe.pending:
                return


def write_proxied_kubeconfig(src: str | Path, dst: str | Path, proxy: FaultProxy) -> str:
    """Copy kubeconfig ``src`` (JSON or YAML) to ``dst`` with every cluster's server pointed at
    ``proxy`` (same CA and client credentials: TLS goes through the proxy end to end)."""
    import yaml

    cfg = yaml.safe_load(Path(src).read_text())
    for cluster in cfg.get("clusters") or []:
        cluster["cluster"]["server"] = proxy.url
    Path(dst).write_text(json.dumps(cfg, indent=2) + "\n")
    return str(dst)
