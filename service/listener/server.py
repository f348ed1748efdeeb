"""The listener's TCP front door: pynetdicom's threaded association server with bounded connections and threads.

pynetdicom starts a thread (and a DUL thread) per accepted socket and counts ``max_associations`` over those
threads, before any A-ASSOCIATE-RQ: a few idle TCP connections hold every slot for the network timeout, even after
the client has gone. Here (issue 16):

- an accepted connection is *pending* until a whole A-ASSOCIATE-RQ PDU has arrived (TLS: after the handshake);
  it must arrive within ``artim_timeout_s`` (the ARTIM timer of PS3.8 9.1.5) or the socket is closed. A socket
  closed by its client frees its slot at once. No Association (nor its threads) exists before that;
- at most ``max_pending_connections`` are pending: a new connection evicts the oldest pending one, so junk
  connections cannot lock known peers out (a real sender sends its A-ASSOCIATE-RQ immediately);
- at most ``max_associations`` + ``REJECT_SLOTS`` association threads exist: the extra few answer an
  A-ASSOCIATE-RJ (local limit exceeded) as pynetdicom does; beyond that the connection is closed. A slot is freed
  when its association ends (release, abort, dropped connection, network timeout);
- the TLS handshake runs on the connection's own thread with the ARTIM timeout, never on the accept loop.

Hand-written because pynetdicom exposes no hook for this; it reuses pynetdicom's server and request handler.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections import OrderedDict
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

log = logging.getLogger(__name__)

REJECT_SLOTS = 2  # association threads beyond max_associations that may still answer "local limit exceeded"
A_ASSOCIATE_RQ = 0x01
PEEK_LIMIT = 65536  # an A-ASSOCIATE-RQ longer than this is read by pynetdicom (under the ACSE timeout)


class _Handler(RequestHandler):
    def handle(self) -> None:
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join()  # this thread holds the association slot until the association has ended


class GuardedAssociationServer(ThreadedAssociationServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, limits: tuple[int, int, float], tls: ssl.SSLContext | None, **kwargs: Any):
        max_assoc, max_pending, artim_s = limits
        self.artim_s = artim_s
        self.max_pending = max_pending
        self.tls = tls
        self._assoc_slots = threading.BoundedSemaphore(max_assoc + REJECT_SLOTS)
        self._pending: OrderedDict[socket.socket, None] = OrderedDict()  # oldest first
        self._pending_lock = threading.Lock()
        kwargs["request_handler"] = _Handler
        super().__init__(*args, **kwargs)

    # the accept loop only accepts: TLS and the wait for the A-ASSOCIATE-RQ run on the connection's thread
    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._pending_lock:
            self._pending[request] = None
            evicted = []
            while len(self._pending) > self.max_pending:
                evicted.append(self._pending.popitem(last=False)[0])
        for sock in evicted:  # its own thread wakes up, sees the connection closed and ends
            log.warning("closing a connection that sent no A-ASSOCIATE-RQ (pending connections full)")
            _shutdown(sock)
        try:
            super().process_request(request, client_address)  # ThreadingMixIn: one thread for the connection
        except RuntimeError:  # no thread could be started
            self._forget(request)
            _close(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            conn = self._await_association_request(request)
        finally:
            claimed = self._forget(request)  # False: evicted meanwhile (its socket is being shut down)
        if conn is None or not claimed:
            _close(request)
            return
        if not self._assoc_slots.acquire(blocking=False):
            log.warning("closing a connection: association threads at their limit")
            _close(conn)
            return
        try:
            super().process_request_thread(conn, client_address)
        finally:
            self._assoc_slots.release()

    def _forget(self, sock: socket.socket) -> bool:
        """Take ``sock`` off the pending list; False when it was no longer there (evicted)."""
        with self._pending_lock:
            return self._pending.pop(sock, False) is None

    def pending_connections(self) -> int:
        with self._pending_lock:
            return len(self._pending)

    def _await_association_request(self, sock: socket.socket) -> socket.socket | None:
        """The connection once a whole A-ASSOCIATE-RQ has arrived (TLS-wrapped when configured), else None."""
        deadline = time.monotonic() + self.artim_s
        try:
            sock.settimeout(self.artim_s)
            if self.tls is not None:
                tls_sock = self.tls.wrap_socket(sock, server_side=True)  # handshake within the ARTIM timeout
                tls_sock.settimeout(None)
                ready = tls_sock.pending() > 0 or _readable(tls_sock, deadline)
                return tls_sock if ready else None
            needed = 6
            while True:
                if not _readable(sock, deadline):
                    return None
                head = sock.recv(min(needed, PEEK_LIMIT), socket.MSG_PEEK)
                if not head:
                    return None  # closed by the client
                if len(head) >= 6:
                    if head[0] != A_ASSOCIATE_RQ:
                        return sock  # let pynetdicom answer a wrong PDU as the state machine says
                    needed = min(6 + struct.unpack(">I", head[2:6])[0], PEEK_LIMIT)
                if len(head) >= needed:
                    sock.settimeout(None)
                    return sock
                time.sleep(0.01)  # more of the PDU is on its way
        except (OSError, ValueError):  # timeout, reset, failed handshake, socket closed by eviction
            return None


def _readable(sock: socket.socket, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    ready, _, _ = select.select([sock], [], [], remaining)
    return bool(ready)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    _shutdown(sock)
    sock.close()


def start_guarded_server(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    tls: ssl.SSLContext | None,
    *,
    max_associations: int,
    max_pending: int,
    artim_s: float,
) -> GuardedAssociationServer:
    """``AE.start_server(block=False)`` with the guarded server class."""
    server: GuardedAssociationServer = ae.make_server(  # type: ignore[assignment]
        address,
        evt_handlers=evt_handlers,
        server_class=GuardedAssociationServer,
        limits=(max_associations, max_pending, artim_s),
        tls=tls,
    )
    thread = threading.Thread(target=server.serve_forever, name="listener-accept", daemon=True)
    thread.start()
    ae._servers.append(server)  # noqa: SLF001 - so that the server's shutdown() finds itself there
    return server
