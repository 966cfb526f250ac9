"""A fault-injecting twin of agent.fs.RealFS, in the spirit of syncthing's
errorfs. Install it with agent.fs.install(FaultyFS()).

Faults:
    fail(op, pattern, errno_name="EIO", short=None, after=0, times=1)
        the (after+1)-th call of `op` on a path matching the glob `pattern`
        raises OSError(errno_name); with short=N a write first writes N bytes
        (a short write). times=None: every matching call from then on.
Power cuts:
    track(root)      start modelling what is durable under root
    crash_after(n)   the n-th file operation from now raises PowerCut (before
                     it happens), and so does every one after it
    power_cut(rng)   drop what a power cut loses: every file written with
                     write()/pwrite() goes back to what was last fsynced; a
                     directory's entries go back to its last fsync (a rename
                     or a create not followed by fsync_dir is undone); pages
                     of mmap'd files that were not msynced are each kept or
                     lost at random (rng), as the kernel's writeback may have
                     flushed some of them. Every fd and mapping handed out is
                     closed, so the store can be opened again.
"""
import errno
import fnmatch
import os

from agent.fs import RealFS

PAGE = 4096


class PowerCut(BaseException):
    """The machine lost power here (not an OSError: nothing may handle it)."""


class FaultyFS(RealFS):
    def __init__(self):
        self.rules = []
        self.paths = {}        # fd -> path at open
        self.fds = {}          # fd -> inode, of the fds handed out and not closed
        self.maps = {}         # id(mm) -> (mm, ino)
        self.root = None
        self.durable = {}      # ino -> bytes on disk
        self.dirs = {}         # dir -> {name: ino} on disk
        self.mapped = set()    # inos written through mmap
        self.countdown = None
        self.crashed = False
        self.ops = 0

    # -- faults

    def fail(self, op, pattern="*", errno_name="EIO", short=None, after=0, times=1):
        self.rules.append({"op": op, "pattern": pattern, "errno": getattr(errno, errno_name),
                           "short": short, "after": after, "times": times})

    def clear(self):
        self.rules = []

    def _path(self, fd):
        p = self.paths.get(fd)
        if p is None:  # opened before this FS was installed
            try:
                p = os.readlink("/proc/self/fd/%d" % fd)
            except OSError:
                p = None
        return p

    def _rule(self, op, path):
        for r in self.rules:
            if r["op"] == op and fnmatch.fnmatch(os.path.basename(path or ""), r["pattern"]):
                if r["after"] > 0:
                    r["after"] -= 1
                    continue
                if r["times"] is not None:
                    if r["times"] <= 0:
                        continue
                    r["times"] -= 1
                return r
        return None

    def _step(self, op, path):
        if self.crashed:
            raise PowerCut(op)
        self.ops += 1
        if self.countdown is not None:
            self.countdown -= 1
            if self.countdown <= 0:
                self.crashed = True
                raise PowerCut(op)
        r = self._rule(op, path)
        if r is not None and r["short"] is None:
            raise OSError(r["errno"], os.strerror(r["errno"]), path)
        return r

    # -- the operations

    def open(self, path, flags, mode=None):
        self._step("open", path)
        fd = super().open(path, flags, mode)
        self.paths[fd] = path
        self.fds[fd] = os.fstat(fd).st_ino
        return fd

    def close(self, fd):
        self.fds.pop(fd, None)
        self.paths.pop(fd, None)
        os.close(fd)

    def write(self, fd, data):
        r = self._step("write", self._path(fd))
        if r is not None:
            os.write(fd, bytes(data[:r["short"]]))
            raise OSError(r["errno"], os.strerror(r["errno"]), self._path(fd))
        return super().write(fd, data)

    def pwrite(self, fd, data, offset):
        r = self._step("pwrite", self._path(fd))
        if r is not None:
            os.pwrite(fd, bytes(data[:r["short"]]), offset)
            raise OSError(r["errno"], os.strerror(r["errno"]), self._path(fd))
        return super().pwrite(fd, data, offset)

    def read_file(self, path):
        if self.crashed:
            raise PowerCut("read")
        return super().read_file(path)

    def fsync(self, fd):
        self._step("fsync", self._path(fd))
        super().fsync(fd)
        self._persist_fd(fd)

    def fdatasync(self, fd):
        self._step("fdatasync", self._path(fd))
        super().fdatasync(fd)
        self._persist_fd(fd)

    def ftruncate(self, fd, size):
        self._step("ftruncate", self._path(fd))
        super().ftruncate(fd, size)

    def allocate(self, fd, offset, length):
        self._step("allocate", self._path(fd))
        super().allocate(fd, offset, length)

    def rename(self, src, dst):
        self._step("rename", dst)
        super().rename(src, dst)

    def unlink(self, path):
        self._step("unlink", path)
        super().unlink(path)

    def mkdir(self, path, mode=None):
        self._step("mkdir", path)
        new = not os.path.isdir(path)
        super().mkdir(path, mode)  # made durable in its parent
        if new and self.root is not None and _under(path, self.root):
            self.dirs.setdefault(os.path.abspath(path), {})

    def fsync_dir(self, path):
        self._step("fsync_dir", path)
        super().fsync_dir(path)
        if self.root is not None and _under(path, self.root):
            self.dirs[os.path.abspath(path)] = _listing(path)

    def mmap(self, fd, size, writable=True):
        self._step("mmap", self._path(fd))
        mm = super().mmap(fd, size, writable)
        if writable:
            ino = os.fstat(fd).st_ino
            self.maps[id(mm)] = (mm, ino)
            self.mapped.add(ino)
        return mm

    def msync(self, mm):
        self._step("msync", None)
        super().msync(mm)
        entry = self.maps.get(id(mm))
        if entry is not None and self.root is not None:
            self.durable[entry[1]] = bytes(mm[:])

    # -- the power-cut model

    def track(self, root):
        """From now on, model what is durable under root (all of it is now)."""
        self.root = os.path.abspath(root)
        self.durable, self.dirs = {}, {}
        for d, _, files in os.walk(self.root):
            self.dirs[os.path.abspath(d)] = _listing(d)
            for f in files:
                p = os.path.join(d, f)
                with open(p, "rb") as fh:
                    self.durable[os.fstat(fh.fileno()).st_ino] = fh.read()

    def crash_after(self, n):
        self.countdown = n

    def _persist_fd(self, fd):
        if self.root is None:
            return
        ino = os.fstat(fd).st_ino
        rfd = os.open("/proc/self/fd/%d" % fd, os.O_RDONLY)
        try:
            size = os.fstat(rfd).st_size
            self.durable[ino] = os.pread(rfd, size, 0) if size else b""
        finally:
            os.close(rfd)

    def power_cut(self, rng=None):
        """Apply the cut (see the module doc), then behave as a fresh disk."""
        for mm, _ in list(self.maps.values()):
            try:
                mm.close()
            except (BufferError, ValueError):
                pass
        for fd, ino in list(self.fds.items()):
            try:  # only if the number still names that file (never someone else's fd)
                if os.fstat(fd).st_ino == ino:
                    os.close(fd)
            except OSError:
                pass
        self.fds.clear()
        self.paths.clear()
        current = {}
        for d, _, files in os.walk(self.root):
            for f in files:
                p = os.path.join(d, f)
                with open(p, "rb") as fh:
                    current[os.fstat(fh.fileno()).st_ino] = fh.read()
        for d, _, _ in list(os.walk(self.root)):
            d = os.path.abspath(d)
            if d not in self.dirs:  # a directory no fsync ever made durable
                self.dirs[d] = {}
        for d in sorted(self.dirs, key=len):
            if not os.path.isdir(d):
                os.makedirs(d, exist_ok=True)
            want = self.dirs[d]
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if os.path.isfile(p) and name not in want:
                    os.unlink(p)
            for name, ino in want.items():
                if ino is None:
                    continue
                data = self.durable.get(ino, b"")
                if ino in self.mapped and rng is not None and ino in current:
                    data = _mix(data, current[ino], rng)
                with open(os.path.join(d, name), "wb") as fh:
                    fh.write(data)
        self.maps.clear()
        self.mapped.clear()
        self.crashed = False
        self.countdown = None
        self.rules = []
        self.track(self.root)


def _under(path, root):
    path = os.path.abspath(path)
    return path == root or path.startswith(root + os.sep)


def _listing(d):
    out = {}
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            out[name] = os.stat(p).st_ino
    return out


def _mix(old: bytes, new: bytes, rng) -> bytes:
    """Each page either as last synced or as the process left it."""
    n = max(len(old), len(new))
    out = bytearray()
    for off in range(0, n, PAGE):
        src = new if rng.random() < 0.5 else old
        page = src[off:off + PAGE]
        out += page + bytes(min(PAGE, n - off) - len(page))
    return bytes(out)
