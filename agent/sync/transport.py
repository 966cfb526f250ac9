"""asyncio TCP + TLS 1.3 around the sans-I/O session.

Both ends present certificates and require the other's (CERT_REQUIRED). The
chain is checked against the public carrier (agent/sync/identity.py), which
proves nothing; right after the handshake the peer's certificate hash is
compared with the known device ids, and a connection that does not match is
closed before a single sync byte is read.
"""
import asyncio
import ssl
import time

from .errors import PeerUnreachable, SyncTimeout, UnknownPeer
from .identity import carrier_pem, cert_id, identity_paths
from .peers import format_addr
from ..errors import RemoteError
from .session import Absorb, Check, Session
from .check import Mend, join_records

__all__ = ["server_context", "client_context", "peer_device_id", "connect", "drive", "settle",
           "HANDSHAKE_TIMEOUT", "IDLE_TIMEOUT", "KEEPALIVE"]

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
KEEPALIVE = 15.0
TICK = 0.5
READ_SIZE = 1 << 18
_NO_CHECK_TIME = 0x200000   # X509_V_FLAG_NO_CHECK_TIME: pinned ids do not expire


def _context(data_dir, server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    _, key, cert = identity_paths(data_dir)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cadata=carrier_pem())
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.verify_flags |= _NO_CHECK_TIME
    except (ValueError, ssl.SSLError):  # pragma: no cover - very old OpenSSL
        pass
    return ctx


def server_context(data_dir):
    return _context(data_dir, True)


def client_context(data_dir):
    return _context(data_dir, False)


def settle(session: Session, data) -> None:
    """Feed bytes to the session and perform the disk work it asks for (each
    batch merged by its node, then the session queues the ACK), until it asks
    for none."""
    node = session.node
    acts = session.receive(data)
    while acts:
        for m in acts:
            if isinstance(m, Check):
                session.checked(m, node.check_heads(m.vv, m.heads, m.peer))
                continue
            if isinstance(m, Mend):
                try:
                    changed = join_records(node, m)
                except RemoteError as e:   # checked whole before: nothing was joined
                    session.absorb_failed(m, e)
                    return
                session.mended(m, changed)
                continue
            if isinstance(m, Absorb):
                try:
                    got = node.take_snapshot_chunk(m.chunk, m.first, m.last)
                except RemoteError as e:   # a damaged snapshot: nothing of it was applied
                    session.absorb_failed(m, e)
                    return
                session.absorbed(m, got, node.advertised())
                continue
            t = node.receive(m.changes)
            for head, raw, why in m.odd:
                node.quarantine_raw(t, head, raw, why)
            store = session.head_store
            for head, count, nbytes, bottom in m.used:
                store.add(head, count, nbytes, bottom)
            session.merged(m, t, node.advertised())
        acts = session.receive(b"")


def peer_device_id(writer) -> str:
    """Device id of the certificate the peer presented (UnknownPeer if none)."""
    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    if not der:
        raise UnknownPeer("the peer presented no certificate")
    return cert_id(der)


async def connect(host, port, ctx, expect_id, timeout=HANDSHAKE_TIMEOUT):
    """Open a pinned TLS connection; returns (reader, writer). expect_id:
    the peer's device id, stored or as shown (with its check character)."""
    from .devid import stored_id
    expect_id = stored_id(expect_id)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, ssl_handshake_timeout=timeout),
            timeout + 1)
    except asyncio.TimeoutError:
        raise SyncTimeout("no TLS handshake with %s within %.0f s"
                          % (format_addr(host, port), timeout)) from None
    except (OSError, ssl.SSLError) as e:
        raise PeerUnreachable("cannot connect to %s: %s (is `mycelium serve` running there, "
                              "and is the address in `mycelium peer list` right?)"
                              % (format_addr(host, port), e.strerror or e)) from None
    got = peer_device_id(writer)
    if got != expect_id:
        writer.close()
        from .devid import display_id
        raise UnknownPeer("%s presented device id %s, not %s; if that device was "
                          "reinstalled, add its new id with `mycelium peer add`"
                          % (format_addr(host, port), display_id(got), display_id(expect_id)))
    return reader, writer


async def drive(session: Session, reader, writer, *, until_caught_up=False, wake=None,
                on_event=None, idle_timeout=IDLE_TIMEOUT, keepalive=KEEPALIVE,
                handshake_timeout=HANDSHAKE_TIMEOUT, stop=None):
    """Run one session over a connection until it closes (or, with
    until_caught_up, until both sides are caught up). Returns the session."""
    wake = wake or asyncio.Event()
    started = time.monotonic()
    last_sent = started

    async def flush():
        nonlocal last_sent
        data = session.data_to_send()
        if data:
            writer.write(data)
            last_sent = time.monotonic()
            await writer.drain()

    def deliver():
        for ev in session.events():
            if on_event:
                on_event(session, ev)

    read_task = None
    try:
        session.start()
        await flush()
        while True:
            if read_task is None:
                read_task = asyncio.ensure_future(reader.read(READ_SIZE))
            wake_task = asyncio.ensure_future(wake.wait())
            done, _ = await asyncio.wait({read_task, wake_task}, timeout=TICK,
                                         return_when=asyncio.FIRST_COMPLETED)
            wake_task.cancel()
            wake.clear()
            if read_task in done:
                try:
                    data = read_task.result()
                except (OSError, ssl.SSLError) as e:
                    data = b""
                    if not session.closed:
                        session.fail(PeerUnreachable("connection lost: %s" % e), send_bye=False)
                read_task = None
                if data:
                    settle(session, data)
                else:
                    session.eof()
            now = time.monotonic()
            if not session.closed:
                if session.peer_vv is None and now - started > handshake_timeout:
                    session.fail(SyncTimeout("the peer sent no HELLO within %.0f s"
                                             % handshake_timeout))
                elif now - session.last_heard > idle_timeout:
                    session.fail(SyncTimeout("the peer was silent for %.0f s" % idle_timeout))
                elif stop is not None and stop.is_set():
                    session.close("shutting down")
                else:
                    session.pump()
                    if session.live and now - last_sent > keepalive:
                        session.have()
            if until_caught_up and session.caught_up and not session.closed:
                c = session.compare
                if c is None or c.done:
                    session.close("caught up" if c is None else "checked")
                elif c.started is None:
                    if session.peer_check:
                        if c.prepare():          # this side's tree, built in slices
                            c.start()
                        else:
                            wake.set()           # go on building without waiting
                            if time.monotonic() - last_sent > keepalive:
                                session.have()   # the peer hears from us meanwhile
                    else:
                        from .errors import PeerRefused
                        session.fail(PeerRefused("the peer's build has no convergence check: "
                                                 "upgrade it"))
            try:
                await flush()
            except (OSError, ssl.SSLError, ConnectionError) as e:
                if not session.closed:
                    session.fail(PeerUnreachable("connection lost: %s" % e), send_bye=False)
            deliver()
            if session.closed:
                break
    finally:
        if read_task is not None:
            read_task.cancel()
        deliver()
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            pass
    return session
