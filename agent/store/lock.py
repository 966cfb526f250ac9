"""Who holds a store (docs/FORMAT.md, store files `lock` and `live`).

`lock` is held with flock: exclusively by the one writer, shared by a
read-only process while no writer runs. The writer writes `boot-id pid
durable|relaxed` into it, which after a crash tells a process crash (same
boot: the page cache kept every write) from a power cut, and the mode.

`live` is the writer's seqlock: `u64 generation, u64 keys, u64 heap bytes,
u64 hash blocks`, written in place and never trusted for recovery. The
generation is odd while the writer changes mapped files; a reader beside a
live writer retries a read that overlapped a write, and takes the counts
of keys and bytes from it.
"""
import fcntl
import os
import struct
import time

from .. import fs
from ..errors import StoreError, StoreLocked
from .mapped import MappedFile, READ, WRITE

__all__ = ["boot_id", "writer_holds", "Lock", "Live"]

LIVE = struct.Struct("<QQQQ")  # generation, keys, heap bytes, hash blocks


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def writer_holds(directory: str) -> bool:
    """Does a live writer hold the store in directory (its exclusive lock)?"""
    try:
        fd = os.open(os.path.join(directory, "lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


class Lock:
    """The store's lock, taken at construction. `live_writer`: a read-only
    process found a writer holding it. `prev`: (boot id, pid, mode) of the
    writer before this one."""

    def __init__(self, directory: str, readonly: bool, durable: bool):
        self.dir = directory
        self.path = os.path.join(directory, "lock")
        self.fd = -1
        self.live_writer = False
        self.prev = ("", 0, "")
        if readonly:
            self._share()
        else:
            self._take(durable)

    def _share(self):
        try:
            self.fd = fs.open_fd(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return  # no store here yet
        except OSError as e:
            raise fs.error(e, "open", self.path) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            self.live_writer = True  # a writer holds it: read under its seqlock
        self.prev = self.last_writer()

    def _take(self, durable):
        try:
            self.fd = fs.open_fd(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise fs.error(e, "open", self.path) from None
        deadline = time.monotonic() + 2.0  # a read-only process holds it briefly
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline or self.writer_alive():
                    self.release()
                    raise StoreLocked("another mycelium process is using %s; stop it "
                                      "(or use its API) before opening the store"
                                      % self.dir) from None
                time.sleep(0.02)
        self.prev = self.last_writer()
        try:
            fs.ftruncate(self.fd, 0)
            fs.pwrite(self.fd, ("%s %d %s\n" % (boot_id(), os.getpid(),
                                                "durable" if durable else "relaxed")).encode(), 0)
        except OSError:
            pass  # only a hint: a missing one reads as a power cut, the careful side

    def last_writer(self):
        """(boot id, pid, "durable" or "relaxed") the last writer recorded."""
        try:
            with open(self.path) as f:
                parts = f.read().split()
            return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""
        except (OSError, ValueError, IndexError):
            return "", 0, ""

    def writer_alive(self) -> bool:
        boot, pid, _ = self.last_writer()
        if boot != boot_id() or pid <= 0 or pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except OSError:
            return True

    def power_cut(self, was_clean: bool):
        """None after a clean close or a process crash; else "durable" or
        "relaxed": the store was left dirty by a writer of an earlier boot
        (the machine lost power, or crashed), in that mode."""
        boot, _, mode = self.prev
        if was_clean or boot == boot_id():
            return None
        return mode or "relaxed"

    def release(self):
        if self.fd >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                fs.close(self.fd)
                self.fd = -1


class Live:
    """The live file: the writer bumps it around changes (begin, end); a
    reader maps it read-only and follows it (generation, hints).

    Each field is one aligned 8-byte store through a memoryview: never
    struct.pack_into, which clears its target before writing it, so a
    reader could see a zero generation and zero counts."""

    def __init__(self, directory: str, writer: bool):
        path = os.path.join(directory, "live")
        self.file = None
        if writer:
            self.file = MappedFile(path, 4096, WRITE)
            self.q = memoryview(self.file.mm).cast("Q")
            self.gen = self.q[0] | 1
            self.q[0] = self.gen  # busy until the open ends
            return
        try:
            self.file = MappedFile(path, 0, READ)
        except StoreError:
            self.file = None
        if self.file is None or len(self.file.mm) < LIVE.size:
            if self.file is not None:
                self.file.close()
            raise StoreLocked("the writer of %s is starting; try again" % directory)
        self.q = memoryview(self.file.mm).cast("Q")

    def begin(self):
        self.gen |= 1
        self.q[0] = self.gen

    def end(self, keys):
        q = self.q
        q[1] = keys.n
        q[2] = keys.heap_used
        q[3] = keys.hash.size // 512
        self.gen = (self.gen | 1) + 1
        q[0] = self.gen

    def generation(self) -> int:
        return self.q[0]

    def hints(self):
        """(generation, keys, heap bytes, hash blocks) as the writer left them."""
        q = self.q
        return q[0], q[1], q[2], q[3]

    def close(self):
        if self.file is not None:
            self.q.release()
            self.file.close()
            self.file = None
