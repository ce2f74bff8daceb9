"""A TCP proxy on 127.0.0.1 that a test controls: pass, blackhole, drop, or add latency."""

from __future__ import annotations

import select
import socket
import threading
import time

from threadpool_db.embedded import free_port


class FaultProxy:
    """Forwards 127.0.0.1:<port> to a target. Modes:

    - ``pass``: forward as is;
    - ``blackhole``: accept, forward nothing, answer nothing (new and open connections alike);
    - ``delay``: forward every chunk after ``delay`` seconds.

    ``drop_all()`` cuts every open connection at once (RST-like close on both sides).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "pass"
        self.delay = 0.0
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", self.port))
        self._lsock.listen(128)
        self._lsock.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._accept.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "blackhole":
                with self._lock:
                    self._pairs.append((client, client))  # held open, never answered
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            t = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        socks = [a, b]
        try:
            while not self._stop.is_set():
                r, _, _ = select.select(socks, [], [], 0.2)
                if self.mode == "blackhole":
                    continue  # swallow nothing, forward nothing: both sides just wait
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    if self.mode == "delay" and self.delay:
                        time.sleep(self.delay)
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket drop_all() closed
            return
        finally:
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass

    def drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()
                except OSError:
                    pass

    def url(self, base_url: str) -> str:
        """``base_url`` with its port replaced by the proxy's."""
        from urllib.parse import urlsplit, urlunsplit

        u = urlsplit(base_url)
        netloc = u.netloc.rsplit(":", 1)[0] + f":{self.port}"
        return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))

    def close(self) -> None:
        self._stop.set()
        self._lsock.close()
        self.drop_all()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)
