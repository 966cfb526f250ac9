"""`serve --http HOST:PORT`: the dashboard, /metrics and /healthz, served
from serve's own asyncio loop (no thread, no framework).

    /              the page (agent/observe/page.py): one file, no external assets
    /api/state     everything the page shows, as JSON
    /api/stream    the same, pushed as server-sent events when it changes
    /metrics       Prometheus text exposition format 0.0.4
    /healthz       200 "ok", or 503 with one reason per line

Off by default. On a loopback address it answers only requests whose Host
is a loopback name (a web page cannot reach it by DNS rebinding). Any other
address needs the token in `http.token` in the data directory (made on
first use, owner-only), as `Authorization: Bearer TOKEN` or `?token=TOKEN`;
serve logs the URL with it. GET and HEAD only; a request line and headers
of at most 8 KiB, read within 10 s; at most MAX_CLIENTS connections and
MAX_STREAMS live pages at once (the oldest is dropped).
"""
import asyncio
import hmac
import ipaddress
import json
import os
import secrets
import time
from urllib.parse import parse_qs, urlsplit

from ..errors import UsageError
from .. import fs

__all__ = ["Dashboard", "is_loopback", "TOKEN_FILE"]

TOKEN_FILE = "http.token"
MAX_HEAD = 8 << 10
READ_TIMEOUT = 10.0
MAX_CLIENTS = 32
MAX_STREAMS = 8
PUSH_GAP = 0.25          # at most 4 pushes a second to a live page
REFRESH = 5.0            # a live page gets the figures at least this often
STATUS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
          404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
          503: "Service Unavailable"}


def is_loopback(host) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(data_dir) -> str:
    """The dashboard's token, made (owner-only) the first time."""
    path = os.path.join(data_dir, TOKEN_FILE)
    try:
        with open(path) as f:
            tok = f.read().strip()
        if len(tok) >= 20:
            return tok
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UsageError("cannot read %s (%s): fix its permissions or delete it for a new "
                         "token" % (path, e.strerror)) from None
    tok = secrets.token_urlsafe(24)
    fs.atomic_write(path, (tok + "\n").encode(), mode=0o600)
    return tok


class Dashboard:
    def __init__(self, daemon, host, port):
        from .state import Observer
        from . import page
        self.d = daemon
        self.host, self.port = host, port
        self.token = None if is_loopback(host) else load_token(daemon.data_dir)
        self.obs = Observer(daemon, on_change=self.poke)
        self.page = page.render()
        self.csp = page.CSP
        self.server = None
        self.clients = {}        # connection number -> task
        self.streams = {}        # connection number -> wake event
        self._seq = 0
        self.served = 0

    async def start(self):
        try:
            self.server = await asyncio.start_server(self._client, self.host, self.port,
                                                     backlog=16)
        except OSError as e:
            from ..sync.peers import format_addr
            raise UsageError("cannot serve the dashboard on %s: %s; pick another address "
                             "with --http" % (format_addr(self.host, self.port),
                                              e.strerror or e)) from None
        self.port = self.server.sockets[0].getsockname()[1]
        return self.url()

    def url(self) -> str:
        from ..sync.peers import format_addr
        u = "http://%s/" % format_addr(self.host if self.host not in (None, "0.0.0.0", "::")
                                       else "HOST", self.port)
        return u + ("?token=" + self.token if self.token else "")

    def poke(self):
        """Something changed: wake the live pages (they push at most every PUSH_GAP)."""
        if not self.streams:
            return
        loop = self.server.get_loop() if self.server is not None else None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:   # a save in another thread
            loop.call_soon_threadsafe(self.poke)
            return
        for ev in self.streams.values():
            ev.set()

    async def close(self):
        if self.server is not None:
            self.server.close()
        for t in list(self.clients.values()):
            t.cancel()
        if self.clients:
            await asyncio.wait(list(self.clients.values()), timeout=2)
        self.obs.close()

    # -- one connection

    async def _client(self, reader, writer):
        self._seq += 1
        me = self._seq
        self.clients[me] = asyncio.current_task()
        while len(self.clients) > MAX_CLIENTS:
            old = next(iter(self.clients))
            self.clients.pop(old).cancel()
        try:
            await self._serve_one(me, reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.TimeoutError, OSError):
            pass
        finally:
            self.clients.pop(me, None)
            self.streams.pop(me, None)
            writer.close()

    async def _serve_one(self, me, reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.LimitOverrunError:
            return await self._send(writer, 431, b"request too large\n")
        except asyncio.IncompleteReadError:
            return
        if len(head) > MAX_HEAD:
            return await self._send(writer, 431, b"request too large\n")
        try:
            line, *rest = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
        except ValueError:
            return await self._send(writer, 400, b"bad request\n")
        headers = {}
        for h in rest:
            k, sep, v = h.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        if method not in ("GET", "HEAD"):
            return await self._send(writer, 405, b"GET only\n", extra={"Allow": "GET, HEAD"})
        url = urlsplit(target)
        why = self._refuse(headers, parse_qs(url.query))
        if why:
            return await self._send(writer, why[0], why[1].encode() + b"\n")
        self.served += 1
        body_too = method == "GET"
        path = url.path
        if path == "/":
            return await self._send(writer, 200, self.page, "text/html; charset=utf-8",
                                    body=body_too)
        if path == "/api/state":
            return await self._send(writer, 200, self.state_json(), "application/json",
                                    body=body_too)
        if path == "/metrics":
            from .metrics import render
            return await self._send(writer, 200, render(self.obs.state(), self.obs).encode(),
                                    "text/plain; version=0.0.4; charset=utf-8", body=body_too)
        if path == "/healthz":
            reasons = self.obs.state()["reasons"]
            return await self._send(writer, 503 if reasons else 200,
                                    ("\n".join(reasons) if reasons else "ok").encode() + b"\n",
                                    body=body_too)
        if path == "/api/stream" and body_too:
            return await self._stream(me, writer)
        return await self._send(writer, 404, b"not found\n")

    def _refuse(self, headers, query):
        """(status, why) if the request may not be answered, else None."""
        if self.token is not None:
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else \
                (query.get("token") or [""])[0]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return 401, "a token is needed: the URL serve logged has it (?token=...)"
            return None
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
        if not is_loopback(name):
            return 403, "this dashboard answers only on a loopback address"
        return None

    def state_json(self) -> bytes:
        return json.dumps(self.obs.state(), separators=(",", ":"), default=str).encode()

    async def _send(self, writer, code, data, ctype="text/plain; charset=utf-8", body=True,
                    extra=None):
        hdr = ["HTTP/1.1 %d %s" % (code, STATUS[code]), "Content-Type: " + ctype,
               "Content-Length: %d" % len(data), "Cache-Control: no-store",
               "X-Content-Type-Options: nosniff", "Connection: close",
               "Content-Security-Policy: " + self.csp]
        for k, v in (extra or {}).items():
            hdr.append("%s: %s" % (k, v))
        writer.write(("\r\n".join(hdr) + "\r\n\r\n").encode() + (data if body else b""))
        await writer.drain()

    async def _stream(self, me, writer):
        wake = asyncio.Event()
        self.streams[me] = wake
        while len(self.streams) > MAX_STREAMS:
            old = next(iter(self.streams))
            self.streams.pop(old)
            t = self.clients.get(old)
            if t is not None:
                t.cancel()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                     b"Connection: close\r\n\r\nretry: 2000\n\n")
        last = 0.0
        while not self.d.stop.is_set():
            writer.write(b"data: " + self.state_json() + b"\n\n")
            await writer.drain()
            last = time.monotonic()
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), REFRESH)
            except asyncio.TimeoutError:
                pass
            gap = PUSH_GAP - (time.monotonic() - last)
            if gap > 0:
                await asyncio.sleep(gap)
