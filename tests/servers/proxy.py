"""A loopback TCP proxy that can simulate an outage of the server behind it.

Used in front of moto (whose server keeps its state in memory only, so it cannot be restarted
without losing every queue). `cut()` closes the listening socket (new connections are refused,
as by a server that is down) and shuts every open connection; `resume()` listens again on the
same port. Runs in daemon threads of the test process.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream`. Thread-safe; `cut` and `resume` are
    idempotent and return once the proxy refuses (or accepts) connections."""

    def __init__(self, upstream: int, port: int) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.port = port
        self.resume()

    @property
    def cut_off(self) -> bool:
        with self._lock:
            return self._listener is None

    def resume(self) -> None:
        """Listen again (on the same port as before)."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            listener.settimeout(0.1)
            self.port = listener.getsockname()[1]
            self._listener = listener
            self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
            self._acceptor.start()

    def cut(self) -> None:
        """Refuse new connections and cut the open ones. Returns once the port is free to
        listen on again: the old listener is shut down and its accept thread has ended (a
        listener closed while a thread still waits in accept stays listening until that wait
        ends, and a `resume` meanwhile failed with EADDRINUSE)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
            acceptor, self._acceptor = self._acceptor, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            if acceptor is not None:
                acceptor.join()
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    server.close()
                    return
                self._open.update((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        for sock in (a, b):
            sock.settimeout(None)
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in sel.select():
                        src: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = src.recv(65536)
                        if not data:
                            return
                        peer[src].sendall(data)
            except OSError:
                return
            finally:
                with self._lock:
                    self._open.discard(a)
                    self._open.discard(b)
                a.close()
                b.close()
