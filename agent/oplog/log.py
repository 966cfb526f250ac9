"""The op log: append-only segments of changes, the durable truth.

Durable mode: `commit()` returns after an fdatasync that covers the write;
writers in several threads share one fsync (group commit).
Relaxed mode: every write reaches the OS at once (a killed process loses
nothing); a background thread fsyncs at most every `interval_ms`.
"""
import os
import threading

from ..errors import LogError
from . import segment

SEGMENT_MAX = 64 * 1024 * 1024
HEADER_LEN = len(segment.MAGIC)


def _name(n: int) -> str:
    return "%08d.seg" % n


class OpLog:
    def __init__(self, directory: str, durable: bool = True, interval_ms: int = 100,
                 segment_max: int = SEGMENT_MAX):
        self.dir = directory
        self.durable = durable
        self.interval = interval_ms / 1000.0
        self.segment_max = segment_max
        os.makedirs(directory, exist_ok=True)
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self.segments = sorted(int(n[:-4]) for n in os.listdir(directory)
                               if n.endswith(".seg") and n[:-4].isdigit())
        self.fd = -1
        self.written = 0      # bytes written since open (monotonic)
        self.synced = 0
        self._stop = threading.Event()
        self._flusher = None
        self.truncated = 0    # bytes cut from a torn tail on open

    # -- opening

    def recover(self, start=(0, 0)):
        """Open for appending. Scans from `start` (a position known to be
        durable, e.g. the last checkpoint) to the end, truncates a torn tail,
        and returns the list of (position, payload) found after start."""
        found = []
        if not self.segments:
            self._new_segment(1)
        else:
            seg0, off0 = start
            for n in self.segments:
                if n < seg0:
                    continue
                path = os.path.join(self.dir, _name(n))
                with open(path, "rb") as f:
                    head = f.read(HEADER_LEN)
                    if head != segment.MAGIC:
                        if n != self.segments[-1]:
                            raise LogError("log segment %s has a bad header; restore it "
                                           "from a backup or a peer" % path)
                        end = 0
                    else:
                        off = max(off0 if n == seg0 else 0, HEADER_LEN)
                        end = off
                        for pos, payload in segment.scan(f, off):
                            found.append(((n, pos), payload))
                            end = pos + 8 + len(payload)
                    size = os.fstat(f.fileno()).st_size
                if end < size:
                    if n != self.segments[-1]:
                        raise LogError("log segment %s is damaged in the middle; "
                                       "restore it from a backup or a peer" % path)
                    self.truncated = size - end
                    with open(path, "r+b") as f:
                        if end == 0:
                            f.write(segment.MAGIC)
                            end = HEADER_LEN
                        f.truncate(end)
                        os.fsync(f.fileno())
            self._open_segment(self.segments[-1])
        if not self.durable and self.interval > 0:
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="mycelium-log-flush")
            self._flusher.start()
        return found

    def _new_segment(self, n: int) -> None:
        path = os.path.join(self.dir, _name(n))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, segment.MAGIC)
        os.fsync(fd)
        os.close(fd)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        if n not in self.segments:
            self.segments.append(n)
        self._open_segment(n)

    def _open_segment(self, n: int) -> None:
        if self.fd >= 0:
            os.fdatasync(self.fd)
            os.close(self.fd)
        self.seg = n
        self.fd = os.open(os.path.join(self.dir, _name(n)), os.O_WRONLY | os.O_APPEND)
        self.offset = os.fstat(self.fd).st_size

    # -- writing

    def append(self, payload: bytes):
        """Write one change; returns its position (segment, offset). Not yet
        durable in durable mode: call commit()."""
        return self._write(segment.frame(payload))

    def append_many(self, payloads) -> None:
        """Append several changes with one write (same durability as append)."""
        self._write(b"".join(segment.frame(p) for p in payloads))

    def _write(self, data: bytes):
        with self._lock:
            if self.fd < 0:
                raise LogError("the op log is closed")
            if self.offset + len(data) > self.segment_max and self.offset > HEADER_LEN:
                self._new_segment(self.seg + 1)
            pos = (self.seg, self.offset)
            try:
                n = os.write(self.fd, data)
            except OSError as e:
                raise LogError("cannot write the op log: %s; free some disk space"
                               % e.strerror) from e
            if n != len(data):
                raise LogError("short write to the op log; free some disk space")
            self.offset += n
            self.written += n
            return pos

    def commit(self) -> None:
        """Durable mode: return once everything appended so far is on disk."""
        target = self.written
        if self.synced >= target:
            return
        with self._sync_lock:
            if self.synced >= target:  # another thread's fsync covered us
                return
            with self._lock:  # a segment roll must not close the fd under us
                upto = self.written
                fd = os.dup(self.fd) if self.fd >= 0 else -1
            if fd < 0:
                return
            try:
                os.fdatasync(fd)  # outside _lock: writers go on meanwhile
            finally:
                os.close(fd)
            self.synced = upto

    def end(self):
        return (self.seg, self.offset)

    def _flush_loop(self):
        while not self._stop.wait(self.interval):
            if self.synced < self.written:
                try:
                    self.commit()
                except OSError:
                    pass

    # -- reading

    def read(self, start=(0, 0)):
        """Yield ((segment, offset), payload) of every entry from start."""
        seg0, off0 = start
        for n in list(self.segments):
            if n < seg0:
                continue
            with open(os.path.join(self.dir, _name(n)), "rb") as f:
                off = max(off0 if n == seg0 else 0, HEADER_LEN)
                for pos, payload in segment.scan(f, off):
                    yield (n, pos), payload

    def size(self) -> int:
        return sum(os.path.getsize(os.path.join(self.dir, _name(n))) for n in self.segments)

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        with self._lock:
            if self.fd >= 0:
                os.fdatasync(self.fd)
                os.close(self.fd)
                self.fd = -1
