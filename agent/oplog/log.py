"""The op log: append-only segments of changes, the durable truth.

Durable mode: `commit()` returns after an fdatasync that covers the write;
writers in several threads share one fsync (group commit).
Relaxed mode: every write reaches the OS at once (a killed process loses
nothing); a background thread fsyncs at most every `interval_ms`.

Never lies about what it holds:
  - a failed or short append is cut back to the last whole entry before the
    error is raised, and the next append starts there;
  - a damaged entry anywhere is reported (`damage`, `on_damage`) and skipped,
    and the entries after it stay readable (segment.py resynchronises on a
    marker); only a damaged run at the very end of the last segment (a torn
    write) is truncated, by a writer's recover();
  - segments appear whole: written as a temp file, fsynced, then renamed;
  - `durable_end()` is the position up to which everything is on disk; sync
    sends only what lies before it, so no peer ever holds a change this
    device could still lose in a power cut.
"""
import os
import threading

from .. import fs
from ..errors import DiskFault, LogError
from . import segment

SEGMENT_MAX = 8 * 1024 * 1024   # small, so compaction frees history a segment at a time
HEADER_LEN = segment.HEADER_LEN


def _name(n: int) -> str:
    return "%08d.seg" % n


class OpLog:
    def __init__(self, directory: str, durable: bool = True, interval_ms: int = 100,
                 segment_max: int = SEGMENT_MAX, readonly: bool = False):
        self.dir = directory
        self.durable = durable
        self.interval = interval_ms / 1000.0
        self.segment_max = segment_max
        self.readonly = readonly
        if not readonly:
            try:
                fs.mkdir(directory)
            except OSError as e:
                raise fs.error(e, "create", directory) from None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self.segments = self._list()
        self.versions = {}
        self.fd = -1
        self.seg = self.segments[-1] if self.segments else 0
        self.offset = 0
        self.written = 0      # bytes written since open (monotonic)
        self.synced = 0
        self.synced_pos = (0, 0)
        self._stop = threading.Event()
        self._flusher = None
        self.truncated = 0    # bytes cut from a torn tail on open
        self.damage = {}      # (segment, offset) -> end of a damaged run that was skipped
        self.hits = 0         # damaged runs met by reads so far (each read counts again)
        self.on_damage = None  # callback(segment, offset, end), e.g. the node's event log
        self.on_synced = None  # callback() after a background fsync (relaxed mode)
        self.failed = None    # an error that stops appends (an fsync that failed with EIO)

    def _list(self):
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise fs.error(e, "list", self.dir) from None
        return sorted(int(n[:-4]) for n in names if n.endswith(".seg") and n[:-4].isdigit())

    def path(self, n: int) -> str:
        return os.path.join(self.dir, _name(n))

    # -- reading

    def _version(self, f, n):
        v = self.versions.get(n)
        if v is None:
            head = f.read(HEADER_LEN)
            v = 1 if head == segment.MAGIC_V1 else 2
            if head not in (segment.MAGIC, segment.MAGIC_V1):
                self._damaged(n, 0, HEADER_LEN)  # entries after it are still found
            self.versions[n] = v
        return v

    def _damaged(self, n, start, end):
        if self.damage.get((n, start)) != end:
            self.damage[(n, start)] = end
            if self.on_damage is not None:
                self.on_damage(self.path(n), start, end)

    def _scan(self, n, start, upto=None, live_tail=True):
        """Yield ((segment, offset), payload, end) of segment n from start;
        damaged runs are recorded and skipped. A damaged run that ends the
        last segment is yielded with payload None and not recorded (it may
        be a write in progress, or a torn tail recover() truncates)."""
        try:
            f = open(self.path(n), "rb")
        except FileNotFoundError:
            return
        except OSError as e:
            raise fs.error(e, "read", self.path(n)) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if upto is not None:
                size = min(size, upto)
            v = self._version(f, n)
            last = n == self.segments[-1]
            for pos, payload, end in segment.scan(f, max(start, HEADER_LEN), size, v):
                if payload is None:
                    if end >= size and last and live_tail:
                        yield (n, pos), None, end
                        return
                    self._damaged(n, pos, end)
                    self.hits += 1
                    continue
                yield (n, pos), payload, end

    def read(self, start=(0, 0), upto=None):
        """Yield ((segment, offset), payload) of every readable entry from
        start, up to position upto (exclusive; None: the end)."""
        for pos, payload, _ in self.entries(start, upto):
            yield pos, payload

    def entries(self, start=(0, 0), upto=None):
        """As read(), yielding ((segment, offset), payload, (segment, end)):
        `end` is where a later read resumes after this entry."""
        seg0, off0 = start
        for n in list(self.segments):
            if n < seg0:
                continue
            if upto is not None and n > upto[0]:
                return
            bound = upto[1] if upto is not None and n == upto[0] else None
            for pos, payload, end in self._scan(n, off0 if n == seg0 else 0, bound):
                if payload is not None:
                    yield pos, payload, (n, end)

    def durable_end(self):
        """Everything before this position is on disk."""
        return self.synced_pos

    # -- opening

    def recover(self, start=(0, 0), collect: bool = True):
        """Open for appending. Scans from `start` (a position known to be
        durable, e.g. the last checkpoint) to the end, truncates a torn tail
        of the last segment, and returns the (position, payload) found after
        start (an empty list if not collect: the caller reads them)."""
        if self.readonly:
            raise LogError("the op log was opened read-only")
        for name in os.listdir(self.dir):
            if name.endswith(".tmp"):  # a segment that never got its rename
                try:
                    fs.unlink(os.path.join(self.dir, name))
                except OSError:
                    pass
        found = []
        if not self.segments:
            self._new_segment(1)
        else:
            seg0, off0 = start
            last = self.segments[-1]
            tail_at = None
            for n in self.segments:
                if n < seg0:
                    continue
                for pos, payload, end in self._scan(n, off0 if n == seg0 else 0):
                    if payload is None:
                        tail_at = pos[1]
                    elif collect:
                        found.append((pos, payload))
            if tail_at is not None:
                self._truncate_tail(last, tail_at)
            if self.versions.get(last, 2) != 2 or (last, 0) in self.damage:
                self._new_segment(last + 1)  # never append to a v1 or damaged-header file
            else:
                self._open_segment(last)
                try:  # what a killed process left in the page cache is on disk from here
                    fs.fdatasync(self.fd)
                except OSError as e:
                    raise fs.error(e, "flush", self.path(last)) from None
        self.synced_pos = self.end()
        if not self.durable and self.interval > 0:
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="mycelium-log-flush")
            self._flusher.start()
        return found

    def _truncate_tail(self, n, at):
        path = self.path(n)
        at = max(at, HEADER_LEN)
        try:
            fd = fs.open_fd(path, os.O_WRONLY)
            try:
                size = os.fstat(fd).st_size
                if size > at:
                    self.truncated += size - at
                    fs.ftruncate(fd, at)
                    fs.fsync(fd)
            finally:
                fs.close(fd)
        except OSError as e:
            raise fs.error(e, "truncate the torn tail of", path) from None

    def _new_segment(self, n: int) -> None:
        path = self.path(n)
        tmp = path + ".tmp"
        try:
            fd = fs.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                fs.write(fd, segment.MAGIC)
                fs.fsync(fd)
            finally:
                fs.close(fd)
            fs.rename(tmp, path)
            fs.fsync_dir(self.dir)
        except OSError as e:
            try:
                fs.unlink(tmp)
            except OSError:
                pass
            raise fs.error(e, "start the log segment", path) from None
        if n not in self.segments:
            self.segments.append(n)
        self.versions[n] = 2
        self._open_segment(n)

    def _open_segment(self, n: int) -> None:
        old = self.fd
        fd = fs.open_fd(self.path(n), os.O_WRONLY | os.O_APPEND)
        if old >= 0:
            try:
                fs.fdatasync(old)
            finally:
                fs.close(old)
        self.seg = n
        self.fd = fd
        self.offset = os.fstat(fd).st_size

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
            if self.failed is not None:
                raise self.failed
            if self.offset + len(data) > self.segment_max and self.offset > HEADER_LEN:
                self._roll()
            pos = (self.seg, self.offset)
            try:
                fs.write(self.fd, data)
            except OSError as e:
                self._cut_back(self.offset)
                raise fs.error(e, "append to the op log", self.path(self.seg)) from None
            self.offset += len(data)
            self.written += len(data)
            return pos

    def _roll(self):
        try:
            self._new_segment(self.seg + 1)
        except OSError as e:
            raise fs.error(e, "start a new log segment in", self.dir) from None

    def seal(self) -> bool:
        """Start a new segment now if the current one holds any entry, so
        that everything written so far lies in sealed segments (compaction
        drops whole segments). Returns whether it rolled."""
        with self._sync_lock, self._lock:
            if self.fd < 0 or self.offset <= HEADER_LEN:
                return False
            if self.failed is not None:
                raise self.failed
            upto = self.written
            self._roll()          # fdatasyncs the segment it leaves
            self.synced = upto
            self.synced_pos = (self.seg, self.offset)
        return True

    def drop(self, n: int) -> None:
        """Delete sealed segment n (compaction: a snapshot holds its changes)."""
        if n >= self.seg:
            raise LogError("segment %d is the one being written; it cannot be dropped" % n)
        try:
            fs.unlink(self.path(n))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise fs.error(e, "remove the log segment", self.path(n)) from None
        with self._lock:
            if n in self.segments:
                self.segments.remove(n)
        self.versions.pop(n, None)
        for k in [k for k in self.damage if k[0] == n]:
            del self.damage[k]

    def _cut_back(self, offset):
        """Undo a partial append: the file ends at offset again."""
        try:
            fs.ftruncate(self.fd, offset)
        except OSError as e:
            # the torn bytes stay; a reader skips them, the next open cuts them
            self.failed = fs.error(e, "cut a failed append back in", self.path(self.seg))

    def commit(self) -> None:
        """Return once everything appended so far is on disk. In durable mode
        nothing appended is acknowledged before this returns, so a failed
        fsync cuts the unsynced entries back (they never happened) and
        raises; in relaxed mode they were acknowledged, so they stay and the
        next commit tries again. (One writer thread: the node is not
        thread-safe; the relaxed flusher only ever syncs.)"""
        target = self.written
        if self.synced >= target:
            return
        with self._sync_lock:
            if self.synced >= target:  # another thread's fsync covered us
                return
            with self._lock:  # a segment roll must not close the fd under us
                upto = self.written
                pos = (self.seg, self.offset)
                fd = os.dup(self.fd) if self.fd >= 0 else -1
            if fd < 0:
                return
            try:
                fs.fdatasync(fd)  # outside _lock: writers go on meanwhile
            except OSError as e:
                err = fs.error(e, "flush the op log", self.path(pos[0]))
                if isinstance(err, DiskFault):
                    self.failed = err  # the kernel may have dropped the pages: stop
                if self.durable:
                    self._cut_unsynced()
                raise err from None
            finally:
                os.close(fd)
            self.synced = upto
            self.synced_pos = pos

    def _cut_unsynced(self):
        """Durable mode, after a failed fsync: the file ends at the last
        synced position again (a roll fsyncs the segment it leaves)."""
        with self._lock:
            seg, off = self.synced_pos
            at = off if seg == self.seg else HEADER_LEN
            if self.offset > at and self.fd >= 0:
                self._cut_back(at)
                self.offset = at
            self.synced = self.written  # nothing is pending any more

    def end(self):
        return (self.seg, self.offset)

    def _flush_loop(self):
        while not self._stop.wait(self.interval):
            if self.synced < self.written:
                try:
                    self.commit()
                except Exception:  # noqa: BLE001 - retried next tick; appends see `failed`
                    continue
                if self.on_synced is not None:
                    self.on_synced()

    def size(self) -> int:
        total = 0
        for n in self.segments:
            try:
                total += os.path.getsize(self.path(n))
            except OSError:
                pass
        return total

    def damaged_bytes(self) -> int:
        return sum(end - start for (_, start), end in self.damage.items())

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        with self._lock:
            if self.fd >= 0:
                try:
                    if self.failed is None:
                        fs.fdatasync(self.fd)
                finally:
                    fs.close(self.fd)
                    self.fd = -1
