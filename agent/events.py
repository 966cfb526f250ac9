"""The timeline: a bounded, durable ring of what this device did and saw.

Each event has a time, a device (None: this one; else the peer's id), a
kind ("sync.merged", "fork", "quarantine", "compaction", ...) and a few
details. Every layer appends through one small interface, `emit()`, which
is one list append: nothing is formatted, written or locked on the hot
path. `flush()` (serve's loop calls it each second, `Node.close()` at the
end) writes the buffered events in one write(2) and never fsyncs: the
timeline is a record for people, and an fsync on an SD card takes tens of
ms. A SIGKILL loses nothing flushed (the page cache holds it); a power cut
may lose the last ~30 s of events, never an acknowledged write.

Routine traffic (changes sent and merged) is `tally()`ed: summed per peer
and kind over TALLY_SECONDS, then written as one event, so a device that
syncs every second keeps weeks of forks and quarantines in the ring, not
hours of "sent 1 change".

On disk (docs/FORMAT.md, "Timeline"): `events.log` and `events.old.log`
in the data directory, one line per event, `CRC32(hex) JSON`. When
events.log would pass half the cap it becomes events.old.log (replacing
the older one), so both together never exceed the cap. Writers take an
flock on events.log, so `serve` and a CLI command can both append; a
torn or damaged line fails its CRC and is skipped by readers. Reading
takes no lock and writes nothing.
"""
import fcntl
import json
import os
import time
import zlib

__all__ = ["Timeline", "Notes", "record", "read", "follow", "parse_since", "FILE", "OLD", "DEFAULT_CAP"]

FILE, OLD = "events.log", "events.old.log"
DEFAULT_CAP = 1 << 20        # both files together, bytes
MAX_BUFFER = 10_000          # unflushed events kept; more are counted as dropped
MAX_TEXT = 300               # a detail string is cut to this many characters
TALLY_SECONDS = 60.0


class Timeline:
    """The writer side, one per open data directory (the Node owns it)."""

    def __init__(self, data_dir: str, readonly: bool = False, cap: int = None,
                 clock=time.time):
        self.dir = data_dir
        self.readonly = readonly
        self.cap = int(os.environ.get("MYCELIUM_EVENTS_KB", 0)) * 1024 or cap or DEFAULT_CAP
        self.clock = clock
        self._buf = []
        self._tally = {}           # (kind, device) -> {field: sum}
        self._tally_since = None
        self.dropped = 0           # events not kept: buffer full or the disk refused them
        self.written = 0
        self.error = None          # the last write error, None once writes work again
        self.listeners = []        # callables(event dict), e.g. the dashboard's live feed

    def emit(self, kind: str, device: str = None, **details) -> None:
        """Append one event (cheap: call it anywhere, any thread)."""
        if len(self._buf) < MAX_BUFFER:
            self._buf.append((self.clock(), kind, device, details))
        else:
            self.dropped += 1

    def tally(self, kind: str, device: str = None, **counts) -> None:
        """Add counts to a summed event written once per TALLY_SECONDS."""
        t = self._tally.get((kind, device))
        if t is None:
            if self._tally_since is None:
                self._tally_since = self.clock()
            self._tally[(kind, device)] = dict(counts)
            return
        for k, v in counts.items():
            t[k] = t.get(k, 0) + v

    def _close_tallies(self, force):
        now = self.clock()
        if not self._tally or (not force and now - self._tally_since < TALLY_SECONDS):
            return
        span = round(now - self._tally_since, 1)
        for (kind, device), counts in self._tally.items():
            self._buf.append((now, kind, device, dict(counts, seconds=span)))
        self._tally = {}
        self._tally_since = None

    def flush(self, force: bool = False) -> int:
        """Write what is buffered (tallies too once their window ends, or
        when force). Never raises: a full disk counts the events as dropped
        and keeps `error`. Returns how many were written."""
        self._close_tallies(force)
        if not self._buf:
            return 0
        buf, self._buf = self._buf, []
        events = [_event(t, k, d, det) for t, k, d, det in buf]
        for ev in events:
            for fn in self.listeners:
                try:
                    fn(ev)
                except Exception:  # a listener must not stop the timeline
                    pass
        if self.readonly or not _may_write(self.dir):
            return 0
        data = b"".join(_line(ev) for ev in events)
        try:
            _append(self.dir, data, self.cap)
        except OSError as e:
            self.dropped += len(events)
            self.error = "%s: %s" % (os.path.join(self.dir, FILE), e.strerror or e)
            return 0
        self.error = None
        self.written += len(events)
        return len(events)


def _event(t, kind, device, details):
    ev = {"time": round(t, 3), "kind": kind, "device": device}
    for k, v in details.items():
        if isinstance(v, str) and len(v) > MAX_TEXT:
            v = v[:MAX_TEXT] + "..."
        ev[k] = v
    return ev


def _line(ev) -> bytes:
    # JSON escapes every newline in a string, so a line is one event
    body = json.dumps(ev, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _may_write(data_dir) -> bool:
    """Root never writes into a directory another user owns (the service's
    /var/lib/mycelium): a root-owned events.log would lock its owner out."""
    if os.geteuid() != 0:
        return True
    try:
        return os.stat(data_dir).st_uid == 0
    except OSError:
        return False


def _append(data_dir, data, cap):
    path = os.path.join(data_dir, FILE)
    for _ in range(8):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:   # another writer rotated it while we waited
                continue
            size = os.fstat(fd).st_size
            if size and size + len(data) > cap // 2:
                os.replace(path, os.path.join(data_dir, OLD))
                continue   # the lock is on the old inode: open the new file
            if len(data) > cap // 2:    # keep the newest whole lines that fit
                data = data[data.find(b"\n", len(data) - cap // 2) + 1:]
            os.write(fd, data)
            return
        finally:
            os.close(fd)
    raise OSError(0, "events.log kept changing under this writer")


def record(data_dir: str, kind: str, device: str = None, **details) -> None:
    """One event from a command that opens no Node (`peer add`, `invite`)."""
    t = Timeline(data_dir)
    t.emit(kind, device, **details)
    t.flush()


class Notes(list):
    """Node.events: what an open found and did (damage, repairs), each
    also a "notice" event on the timeline."""

    def __init__(self, timeline: Timeline):
        super().__init__()
        self.timeline = timeline

    def append(self, msg) -> None:
        super().append(msg)
        self.timeline.emit("notice", msg=str(msg))


# -- reading (no lock, no writes)

def _lines(f, offset=0):
    """(event, end offset) of each sound line of the open file f (a path is
    opened) from offset."""
    if f is None:
        return
    if isinstance(f, str):
        with _open(f) as g:
            yield from _lines(g, offset)
        return
    try:
        data = os.pread(f.fileno(), max(0, os.fstat(f.fileno()).st_size - offset), offset)
    except OSError:
        return
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return     # a line still being written, or torn: not yet an event
        line = data[pos:nl]
        pos = nl + 1
        ev = _parse(line)
        if ev is not None:
            yield ev, offset + pos


def _parse(line):
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        ev = json.loads(body)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) and "time" in ev and "kind" in ev else None


def _wanted(ev, since, kinds):
    if since is not None and ev.get("time", 0) < since:
        return False
    if kinds:
        k = str(ev.get("kind"))
        return any(k == w or k.startswith(w + ".") for w in kinds)
    return True


def read(data_dir: str, since: float = None, kinds=()) -> list:
    """Every sound event in the ring, oldest first; since: a Unix time;
    kinds: names or families ("sync" matches "sync.merged")."""
    out = []
    for name in (OLD, FILE):
        out.extend(ev for ev, _ in _lines(os.path.join(data_dir, name)) if _wanted(ev, since, kinds))
    return out


def follow(data_dir: str, since: float = None, kinds=(), poll: float = 0.5, deadline=None):
    """Every event in the ring, then each one as it is flushed, across
    rotations. A file is known by its inode and its first bytes (tmpfs and
    ext4 reuse inodes), and each poll reads the very file it looked at."""
    path, old = os.path.join(data_dir, FILE), os.path.join(data_dir, OLD)
    for _ in range(100):        # not in the instant between a rotation and the new file
        f = _open(path)
        if not isinstance(f, _NoFile) or not os.path.exists(old):
            break
        time.sleep(0.01)
    with f:
        mark = _mark(f)
        ours = list(_lines(f))
        first = [ev for ev, _ in _lines(old)] + [ev for ev, _ in ours]
    # from the end of our last whole line (a line being written is read later)
    off = ours[-1][1] if ours else 0
    for ev in first:
        if _wanted(ev, since, kinds):
            yield ev
    while deadline is None or time.monotonic() < deadline:
        time.sleep(poll)
        with _open(path) as f:
            now = _mark(f)
            if now is None:
                continue        # between a rotation and the new file: look again
            if now != mark or _fsize(f) < off:
                # rotated: the rest of ours (now events.old.log), or, if that
                # was rotated away too, all of the newer one that replaced it
                with _open(old) as g:
                    rest = off if mark is not None and _mark(g) == mark else 0
                    got = list(_lines(g, rest))
                for ev, _ in got:
                    if _wanted(ev, since, kinds):
                        yield ev
                mark, off = now, 0
            got = list(_lines(f, off))
        for ev, end in got:
            off = end
            if _wanted(ev, since, kinds):
                yield ev


class _NoFile:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _open(path):
    try:
        return open(path, "rb")
    except OSError:
        return _NoFile()


def _mark(f):
    """(inode, first 32 bytes) of an open file, or None for no file."""
    if f is None:
        return None
    return os.fstat(f.fileno()).st_ino, os.pread(f.fileno(), 32, 0)


def _fsize(f):
    return 0 if f is None else os.fstat(f.fileno()).st_size


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float = None) -> float:
    """'90s', '15m', '1h', '2d', '1w' ago, or an ISO date/time (UTC) -> Unix time."""
    now = time.time() if now is None else now
    t = text.strip()
    if t[:-1].replace(".", "", 1).isdigit() and t[-1:] in _UNITS:
        return now - float(t[:-1]) * _UNITS[t[-1]]
    import datetime
    try:
        d = datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("--since takes a span such as 30s, 15m, 1h, 2d or 1w, or a date "
                         "such as 2026-12-03T12:00, not %r" % text) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return d.timestamp()
