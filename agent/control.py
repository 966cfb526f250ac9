"""The local control socket: while `mycelium serve` holds a data directory,
the other mycelium commands on this machine read and write through it.

One JSON object per line each way, over a Unix socket `control.sock` in the
data directory (mode 0600: only its owner may use it). A request is
{"op": "put" | "get" | "del" | "scan" | "stats" | "compact" | "backup", ...}; a reply is
{"ok": result} or {"error": class name, "message": text}. A scan with
"stream": true is answered by lines of {"rows": [...]} (256 records or 1 MiB
at most each, the socket drained between them) and then {"ok": count}, so the
daemon never builds a whole result; "limit" is applied by the daemon.
"""
from __future__ import annotations      # annotations are not evaluated: no cost at start-up

import base64
import json
import os
import socket

from . import errors
from .values import Inc, MV, Add, Remove

TYPE_CHECKING = False
if TYPE_CHECKING:       # for type checkers only
    from typing import Callable, Iterator
    from .client import LogWatch

SOCKET_NAME = "control.sock"
MAX_LINE = 16 * 1024 * 1024


def socket_path(data_dir: str) -> str:
    return os.path.join(data_dir, SOCKET_NAME)


def to_json(v):
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    return v


def from_json(v):
    if isinstance(v, dict):
        if set(v) == {"$bytes"}:
            return base64.b64decode(v["$bytes"])
        raise errors.UsageError("a field value cannot be an object")
    return v


def encode_fields(fields: dict) -> list:
    out = []
    for name, v in fields.items():
        t = type(v)
        if t is Inc:
            out.append([name, "inc", v.delta])
        elif t is MV:
            out.append([name, "mv", to_json(v.value)])
        elif t is Add:
            out.append([name, "add", to_json(list(v.values))])
        elif t is Remove:
            out.append([name, "remove", to_json(list(v.values))])
        else:
            out.append([name, "lww", to_json(v)])
    return out


def decode_fields(items) -> dict:
    fields = {}
    for name, kind, v in items:
        if kind == "inc":
            fields[name] = Inc(int(v))
        elif kind == "mv":
            fields[name] = MV(from_json(v))
        elif kind == "add":
            fields[name] = Add(*[from_json(x) for x in v])
        elif kind == "remove":
            fields[name] = Remove(*[from_json(x) for x in v])
        elif kind == "lww":
            fields[name] = from_json(v)
        else:
            raise errors.UsageError("unknown field kind %r" % kind)
    return fields


SCAN_CHUNK = 256               # records per streamed line
SCAN_CHUNK_BYTES = 1 << 20     # or fewer, past this many bytes


def _op_request(line, op):
    """The request on line if it is op (a cheap look first), else None."""
    if b'"%s"' % op.encode() not in line:
        return None
    try:
        req = json.loads(line)
    except ValueError:
        return None
    return req if isinstance(req, dict) and req.get("op") == op else None


def _stream_request(line):
    """The request if it is a streamed scan, else None."""
    if b'"stream"' not in line:
        return None
    req = _op_request(line, "scan")
    return req if req is not None and req.get("stream") else None


class ControlServer:
    """Serves one node's API on the control socket, in the daemon's loop."""

    def __init__(self, node, path: str, on_write=None, on_check=None):
        self.node = node
        self.path = path
        self.on_write = on_write
        self.on_check = on_check      # async fn(request) -> reply: `check PEER` (daemon)
        self.server = None

    async def start(self):
        import asyncio  # here, not at the top: the CLI's client side must stay light
        if os.path.exists(self.path):
            os.unlink(self.path)  # we hold the store lock: nobody else serves it
        old = os.umask(0o177)  # the socket is born owner-only, no window before a chmod
        try:
            self.server = await asyncio.start_unix_server(self._client, self.path,
                                                          limit=MAX_LINE)
        finally:
            os.umask(old)

    async def close(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _client(self, reader, writer):
        import asyncio
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                req = _stream_request(line)
                if req is not None:
                    await self._stream_scan(req, writer)
                    continue
                req = _op_request(line, "check")
                if req is not None and self.on_check is not None:
                    writer.write(json.dumps(await self.on_check(req)).encode() + b"\n")
                    await writer.drain()
                    continue
                writer.write(json.dumps(self.handle(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _stream_scan(self, req, writer):
        """A scan sent as it is read: lines of {"rows": [...]} (at most
        SCAN_CHUNK each, the socket drained between them), then {"ok": n}.
        The daemon never holds more than a chunk of records for it."""
        rows, size, n = [], 0, 0
        try:
            limit = int(req.get("limit") or 0)
            for key, rec, kinds in self.node.scan(str(req.get("prefix", "")), with_kinds=True,
                                                  limit=limit):
                row = json.dumps([key, to_json(rec), kinds])
                rows.append(row)
                size += len(row)
                n += 1
                if len(rows) >= SCAN_CHUNK or size >= SCAN_CHUNK_BYTES:
                    writer.write(b'{"rows": [' + ",".join(rows).encode() + b"]}\n")
                    rows, size = [], 0
                    await writer.drain()
            if rows:
                writer.write(b'{"rows": [' + ",".join(rows).encode() + b"]}\n")
            writer.write(json.dumps({"ok": n}).encode() + b"\n")
        except errors.AgentError as e:
            writer.write(json.dumps({"error": type(e).__name__, "message": str(e)}).encode()
                         + b"\n")
        except (TypeError, ValueError) as e:
            writer.write(json.dumps({"error": "UsageError",
                                     "message": "bad control request: %s" % e}).encode() + b"\n")
        await writer.drain()

    def handle(self, line: bytes) -> dict:
        try:
            try:
                req = json.loads(line)
                op = req["op"]
            except (ValueError, KeyError, TypeError):
                raise errors.UsageError("the control socket takes one JSON request per line")
            node = self.node
            if op == "put":
                node.put(req["key"], decode_fields(req["fields"]))
                self._wrote()
                return {"ok": True}
            if op == "del":
                done = node.delete(req["key"])
                if done:
                    self._wrote()
                return {"ok": done}
            if op == "get":
                got = node.get(req["key"], with_kinds=True)
                return {"ok": None if got is None else [to_json(got[0]), got[1]]}
            if op == "scan":
                rows = []
                limit = int(req.get("limit") or 0)
                for key, rec, kinds in node.scan(req.get("prefix", ""), with_kinds=True,
                                                 limit=limit):
                    rows.append([key, to_json(rec), kinds])
                return {"ok": rows}
            if op == "pending":
                return {"ok": node.pending_list()}
            if op == "release":
                actor = req.get("actor")
                n = node.release_due(force=True, actor=None if actor is None else int(actor, 16))
                if n:
                    self._wrote()
                return {"ok": n}
            if op == "stats":
                return {"ok": dict(node.stats(), served_by="mycelium serve")}
            if op == "compact":
                return {"ok": node.compact(drop=not req.get("keep_log"))}
            if op == "backup":
                return {"ok": node.backup(str(req["path"]))}
            raise errors.UsageError("unknown control op %r" % (op,))
        except errors.AgentError as e:
            return {"error": type(e).__name__, "message": str(e)}
        except (KeyError, TypeError, ValueError) as e:
            return {"error": "UsageError", "message": "bad control request: %s" % e}

    def _wrote(self):
        if self.on_write is not None:
            self.on_write()


class RemoteNode:
    """The part of the Node API the CLI uses, answered by a running daemon."""

    remote = True
    events = ()        # the daemon reports what it finds in its own log
    incomplete = None

    def __init__(self, path: str, timeout: float = 60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.file = self.sock.makefile("rwb")

    def _call(self, **req):
        try:
            self.file.write(json.dumps(req).encode() + b"\n")
            self.file.flush()
        except OSError as e:
            raise errors.SyncError("lost the running `mycelium serve` (%s); try again" % e) from None
        return self._reply()["ok"]

    def _reply(self) -> dict:
        try:
            line = self.file.readline()
        except OSError as e:
            raise errors.SyncError("lost the running `mycelium serve` (%s); try again" % e) from None
        if not line:
            raise errors.SyncError("the running `mycelium serve` closed the control socket")
        rep = json.loads(line)
        if "error" in rep:
            cls = getattr(errors, rep["error"], errors.AgentError)
            if not (isinstance(cls, type) and issubclass(cls, errors.AgentError)):
                cls = errors.AgentError
            raise cls(rep["message"])
        return rep

    def put(self, key: str, fields: dict) -> None:
        self._call(op="put", key=key, fields=encode_fields(fields))

    def delete(self, key: str) -> bool:
        return self._call(op="del", key=key)

    def get(self, key: str, with_kinds: bool = False) -> dict | tuple[dict, dict] | None:
        got = self._call(op="get", key=key)
        if got is None:
            return None
        rec = {k: _values(v) for k, v in got[0].items()}
        return (rec, got[1]) if with_kinds else rec

    def scan(self, prefix: str = "", with_kinds: bool = False,
             limit: int = 0) -> Iterator[tuple]:
        """Rows as the daemon streams them (a chunk at a time)."""
        try:
            self.file.write(json.dumps({"op": "scan", "prefix": prefix, "limit": limit,
                                        "stream": True}).encode() + b"\n")
            self.file.flush()
        except OSError as e:
            raise errors.SyncError("lost the running `mycelium serve` (%s); try again" % e) \
                from None
        done = False
        try:
            while True:
                rep = self._reply()
                if "rows" not in rep:
                    done = True
                    return
                for key, rec, kinds in rep["rows"]:
                    rec = {k: _values(v) for k, v in rec.items()}
                    yield (key, rec, kinds) if with_kinds else (key, rec)
        finally:
            while not done and self.sock is not None:  # left early: read the rest away
                try:
                    done = "rows" not in self._reply()
                except errors.AgentError:
                    done = True

    def stats(self) -> dict:
        return self._call(op="stats")

    def pending_list(self) -> list:
        return self._call(op="pending")

    def compact(self, drop: bool = True) -> dict:
        return self._call(op="compact", keep_log=not drop)

    def check(self, peer: str, repair: bool = True) -> dict:
        """The daemon runs `check PEER` in its session with the peer."""
        return self._call(op="check", peer=peer, repair=repair)

    def backup(self, path: str) -> dict:
        return self._call(op="backup", path=os.path.abspath(path))

    def watch(self, prefix: str, callback: Callable[[str, dict | None], None]) -> LogWatch:
        """As Node.watch, beside serve: callback(key, fields or None) from a
        thread, for every change under prefix that lands (agent/client.py)."""
        from .client import LogWatch
        data_dir = getattr(self, "data_dir", None)
        if data_dir is None:
            raise errors.UsageError("watch needs the data directory: use agent.connect(DIR)")
        return LogWatch(data_dir, prefix, callback)

    def release_due(self, force: bool = True, actor: int | None = None) -> int:
        return self._call(op="release", actor=None if actor is None else "%016x" % actor)

    def close(self) -> None:
        if self.sock is not None:
            self.file.close()
            self.sock.close()
            self.sock = None

    def __enter__(self) -> RemoteNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _values(v):
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return from_json(v)
