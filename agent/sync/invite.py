"""Pairing in one step: `mycelium invite` on one device prints a token (and
a QR code of it); `mycelium join TOKEN` on the other makes each device a
peer of the other.

The token carries the inviter's device id, the addresses it listens on and
a one-time secret of 130 bits. The inviter keeps only the secret's SHA-256
and its expiry (sync/invites.json); the joiner's TLS connection accepts only
the certificate of the id in the token, so the secret goes to no one else.

    MYC1.<device id, 28>.<secret, 26>.<addresses, base32>.<check, 4>

Upper-case letters, digits and dots only: a QR code holds them in its
alphanumeric mode, and a typo fails the check. On a TLS connection from a
device the inviter does not know, while an invite is open:

    inviter -> b"MYCPAIR1\\n"
    joiner  -> one JSON line {"secret": S, "addr": "HOST:PORT" | null, "name": N | null}
    inviter -> one JSON line {"ok": true, "name": ITS HOST NAME} or
               {"ok": false, "error": TEXT}

then the connection closes, and each side's `serve` syncs with the other
as with any peer. A secret is taken (removed from the file) before the
joiner is added, so no token pairs twice.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import time

from .. import fs
from ..errors import UsageError
from . import peers as P
from .devid import display_id, stored_id
from .errors import PeerUnreachable, UnknownPeer

__all__ = ["make_token", "parse_token", "open_invite", "take_invite", "open_invites",
           "local_addrs", "qr_text", "answer", "join"]

MAGIC = b"MYCPAIR1\n"
PREFIX = "MYC1"
TIMEOUT = 10.0


class BadToken(UsageError):
    """A token that does not parse or fails its check."""


class InviteRefused(UsageError):
    """The inviting device answered and refused: no open invite matches."""


# -- the token

def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


def _check(body: str) -> str:
    return _b32(hashlib.sha256(body.encode()).digest())[:4]


def make_token(device_id: str, addrs, secret: str) -> str:
    body = ".".join((PREFIX, stored_id(device_id), secret,
                     _b32(",".join(addrs).encode())))
    return body + "." + _check(body)


def parse_token(token: str):
    """-> (device id, [addresses], secret); BadToken if it is not one."""
    t = "".join(token.split()).upper()
    parts = t.split(".")
    if len(parts) != 5 or parts[0] != PREFIX:
        raise BadToken("that is not an invite token (it starts MYC1. and has five parts); "
                       "copy the whole line `mycelium invite` printed")
    body = t.rsplit(".", 1)[0]
    if not hmac.compare_digest(_check(body), parts[4]):
        raise BadToken("the invite token has a typo (its check does not match); copy it again "
                       "or scan its QR code")
    try:
        addrs = [a for a in _unb32(parts[3]).decode().split(",") if a]
        for a in addrs:
            P.parse_addr(a)
        device_id = stored_id(parts[1])
    except (ValueError, UnicodeDecodeError, UsageError):
        raise BadToken("the invite token is damaged; run `mycelium invite` again") from None
    if not addrs:
        raise BadToken("the invite token names no address; run `mycelium invite --addr "
                       "HOST:PORT` on the inviting device")
    return device_id, addrs, parts[2]


# -- open invites (sync/invites.json, under the peers' lock)

def _path(data_dir):
    return os.path.join(data_dir, "sync", "invites.json")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.upper().encode()).hexdigest()


def _load(data_dir, now):
    doc = fs.read_json(_path(data_dir), "this device's open invites",
                       "Move it away; open invites are lost (run `mycelium invite` again)",
                       default={"version": 1, "invites": []})
    return [i for i in doc.get("invites", []) if i.get("expires", 0) > now]


def open_invite(data_dir, ttl: float, name=None) -> str:
    """Record a new invite; returns its secret."""
    secret = _b32(secrets.token_bytes(17))[:26]
    now = time.time()

    def add(_peers):
        invites = _load(data_dir, now)
        invites.append({"hash": _hash(secret), "expires": now + ttl, "name": name})
        P.write_json(_path(data_dir), {"version": 1, "invites": invites})
    P.edit(data_dir, add)
    from ..events import record
    record(data_dir, "config", what="invite opened", ttl=ttl, name=name)
    return secret


def open_invites(data_dir, now=None) -> int:
    """How many invites are open (unexpired)."""
    if not os.path.exists(_path(data_dir)):
        return 0
    return len(_load(data_dir, time.time() if now is None else now))


def take_invite(data_dir, secret: str, joiner: str, addr, name):
    """Take the invite `secret` opens and add the joiner as a peer, under one
    lock: None if no open invite matches, else the name given to the joiner."""
    now = time.time()
    h = _hash(secret)

    def take(peers):
        invites = _load(data_dir, now)
        hit = [i for i in invites if hmac.compare_digest(i["hash"], h)]
        if not hit:
            return None
        P.write_json(_path(data_dir), {"version": 1,
                                       "invites": [i for i in invites if i is not hit[0]]})
        given = hit[0].get("name") or name
        try:
            P.put(peers, joiner, addr, given)
        except UsageError:      # a clash or a bad name: the id alone
            given = None
            P.put(peers, joiner, addr)
        return given or ""
    got = P.edit(data_dir, take)
    if got is not None:
        P.config_event(data_dir, joiner, "peer joined by invite", addr=addr, name=got or None)
    return got


# -- addresses

def local_addrs(port: int) -> list:
    """This machine's addresses that a peer on its network could dial: the
    one of its default route (found without sending a packet), then the
    others its host name resolves to; loopback last, alone, if nothing else."""
    found = []
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                found.append(s.getsockname()[0])
        except OSError:
            pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM):
            if info[4][0] not in found:
                found.append(info[4][0])
    except OSError:
        pass
    found = [a for a in found
             if not a.startswith(("127.", "fe80")) and a != "::1"] or ["127.0.0.1"]
    return [P.format_addr(a, port) for a in found[:3]]


# -- the QR code

def qr_text(data: str, border: int = 2) -> str:
    """The QR code of `data` as text, two modules a character (half blocks).
    As qrencode's UTF8 mode does, a block is a light module, so that on a
    terminal with light text on a dark ground the code reads dark on light."""
    from ..qr import matrix
    m = matrix(data)
    n = len(m[0]) + 2 * border
    rows = [[0] * n for _ in range(border)] + \
           [[0] * border + r + [0] * border for r in m] + [[0] * n for _ in range(border)]
    if len(rows) % 2:
        rows.append([0] * n)
    glyph = {(0, 0): "\u2588", (0, 1): "\u2580", (1, 0): "\u2584", (1, 1): " "}
    return "\n".join("".join(glyph[(rows[y][x], rows[y + 1][x])] for x in range(n))
                     for y in range(0, len(rows), 2))


# -- the inviter's side (serve)

async def answer(daemon, reader, writer, joiner: str) -> None:
    """An unknown device dialled in while an invite is open: ask for a secret."""
    def done(reply):
        writer.write((json.dumps(reply) + "\n").encode())

    try:
        writer.write(MAGIC)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        if not line.endswith(b"\n"):        # (a line past 64 KB: asyncio's ValueError)
            raise ValueError("no pairing request")
        req = json.loads(line)
        secret, addr, name = req.get("secret"), req.get("addr"), req.get("name")
        if not isinstance(secret, str) or not isinstance(name, (str, type(None))):
            raise ValueError("a malformed pairing request")
        if addr is not None:
            addr = P.format_addr(*P.parse_addr(addr))
        given = take_invite(daemon.data_dir, secret, joiner, addr, name)
        if given is None:
            daemon.log("refused to pair with %s: its secret opens no invite (expired, used, "
                       "or never made here)" % display_id(joiner), "warning",
                       ("pair", joiner))
            done({"ok": False, "error": "no open invite matches (expired or already used): "
                  "run `mycelium invite` again there"})
        else:
            daemon.log("paired with %s%s through an invite%s" % (
                display_id(joiner), " (%s)" % given if given else "",
                ", at %s" % addr if addr else "; it dials in"))
            done({"ok": True, "name": _hostname()})
            daemon.reload_peers()
        await asyncio.wait_for(writer.drain(), TIMEOUT)
    except (asyncio.TimeoutError, ValueError, UsageError, OSError, ConnectionError) as e:
        daemon.log("a pairing attempt from %s failed: %s" % (display_id(joiner), e),
                   "warning", ("pair", joiner))
    finally:
        writer.close()


# -- the joiner's side

async def _pair(host, port, ctx, inviter, request):
    from .transport import connect
    reader, writer = await connect(host, port, ctx, inviter)
    try:
        first = await asyncio.wait_for(reader.read(len(MAGIC)), TIMEOUT)
        if first != MAGIC:
            if first:       # a sync session's HELLO: that device knows this one already
                return {"ok": True, "known": True}
            raise InviteRefused("%s (the inviting device) has no open invite: it expired "
                                "or was used; run `mycelium invite` there again"
                                % P.format_addr(host, port))
        writer.write((json.dumps(request) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        try:
            return json.loads(line)
        except ValueError:
            raise PeerUnreachable("%s sent no answer to the pairing request"
                                  % P.format_addr(host, port)) from None
    finally:
        writer.close()


def join(data_dir, token: str, my_addr=None, name=None, ctx=None):
    """Pair with the device that made `token`; returns (inviter id, the
    address that answered, the name given to it here)."""
    from .identity import ensure_identity
    from .transport import client_context
    inviter, addrs, secret = parse_token(token)
    if inviter == ensure_identity(data_dir):
        raise UsageError("that token is this device's own invite; run `mycelium join` on "
                         "the other device")
    ctx = ctx or client_context(data_dir)
    request = {"secret": secret, "addr": my_addr, "name": _hostname()}
    errors = []
    for addr in addrs:
        host, port = P.parse_addr(addr)
        try:
            reply = asyncio.run(asyncio.wait_for(_pair(host, port, ctx, inviter, request),
                                                 3 * TIMEOUT))
        except asyncio.TimeoutError:
            errors.append("%s: no answer within %.0f s" % (addr, 3 * TIMEOUT))
            continue
        except (UnknownPeer, InviteRefused):
            raise
        except (PeerUnreachable, OSError) as e:
            errors.append(str(e))
            continue
        if not reply.get("ok"):
            raise InviteRefused("%s refused to pair: %s" % (addr, reply.get("error", "no reason")))
        given = name or reply.get("name")
        try:
            P.add_peer(data_dir, inviter, addr, name=given)
        except UsageError:
            given = None
            P.add_peer(data_dir, inviter, addr)
        return inviter, addr, given
    raise PeerUnreachable("could not reach the inviting device: " + "; ".join(errors))


def _hostname():
    """This machine's host name as a peer name, or None if it is not one."""
    n = socket.gethostname().split(".")[0]
    try:
        P.check_name({}, None, n)
    except UsageError:
        return None
    return n if n != "localhost" else None
