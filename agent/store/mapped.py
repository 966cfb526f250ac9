"""A file mapped whole into memory: the building block of every store file.

Three modes:
  WRITE    a shared mapping of the file, grown by doubling with real blocks
           (fs.allocate: posix_fallocate, else written zeros), so a page
           fault can never raise SIGBUS on a full disk
  READ     a shared read-only mapping; refresh() remaps it when a writer in
           another process grew or replaced the file
  PRIVATE  a copy in anonymous memory: writable and growable, never written
           back (a read-only process repairing a store for itself)
"""
import mmap
import os

from .. import fs
from ..errors import DiskFull, StoreError

WRITE, READ, PRIVATE = "write", "read", "private"


class MappedFile:
    """Owns its fd (WRITE, READ) and its mapping."""

    __slots__ = ("path", "fd", "mm", "size", "mode", "ino")

    def __init__(self, path: str, min_size: int = 4096, mode: str = WRITE):
        self.path = path
        self.mode = mode
        self.fd = -1
        self.mm = None
        self.ino = None
        created = False
        try:
            if mode == WRITE:
                created = not os.path.exists(path)
                self.fd = fs.open_fd(path, os.O_RDWR | os.O_CREAT)
                st = os.fstat(self.fd)
                size = st.st_size
                if size < min_size:
                    fs.allocate(self.fd, size, min_size - size)
                    size = min_size
                self.mm = fs.mmap(self.fd, size, True)
            elif mode == READ:
                self.fd = fs.open_fd(path, os.O_RDONLY)
                st = os.fstat(self.fd)
                size = st.st_size
                self.mm = fs.mmap(self.fd, size, False) if size else b""
            else:
                data = b""
                try:
                    data = fs.read_file(path)
                except FileNotFoundError:
                    pass
                size = max(len(data), min_size)
                self.mm = mmap.mmap(-1, size)
                self.mm[:len(data)] = data
                st = None
        except OSError as e:
            self._drop()
            if created:  # a new file that could not be grown (a full disk): leave none
                try:
                    fs.unlink(path)
                except OSError:
                    pass
            raise fs.error(e, "open", path) from None
        self.size = size
        if st is not None:
            self.ino = st.st_ino

    def _drop(self):
        if self.mm is not None:
            if not isinstance(self.mm, bytes):
                self.mm.close()
            self.mm = None
        if self.fd >= 0:
            fs.close(self.fd)
            self.fd = -1

    def ensure(self, size: int) -> None:
        """Make the file at least size bytes long: doubling, or, when the disk
        has no room for that, just what is needed (rounded up to 64 KiB).
        Raises DiskFull, and leaves the file as it was, when even that fails."""
        if size <= self.size:
            return
        new = max(self.size, 4096)
        while new < size:
            new *= 2
        try:
            self._grow(new)
        except DiskFull:
            least = -(-size // 65536) * 65536
            if least >= new:
                raise
            self._grow(least)

    def _grow(self, new: int) -> None:
        if self.mode == PRIVATE:
            mm = mmap.mmap(-1, new)
            mm[:self.size] = self.mm[:self.size]
            self.mm.close()
            self.mm, self.size = mm, new
            return
        if self.mode != WRITE:
            raise StoreError("%s is open read-only" % self.path)
        try:
            fs.allocate(self.fd, self.size, new - self.size)
        except OSError as e:
            try:
                fs.ftruncate(self.fd, self.size)
            except OSError:
                pass
            raise fs.error(e, "grow", self.path) from None
        self.mm.resize(new)
        self.size = new

    def refresh(self) -> bool:
        """READ mode: follow a writer that grew or replaced the file. True if
        the mapping changed."""
        if self.mode != READ:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if st.st_ino == self.ino and st.st_size == self.size:
            return False
        self._drop()
        try:
            self.fd = fs.open_fd(self.path, os.O_RDONLY)
            st = os.fstat(self.fd)
            self.mm = fs.mmap(self.fd, st.st_size, False) if st.st_size else b""
        except OSError as e:
            raise fs.error(e, "open", self.path) from None
        self.size, self.ino = st.st_size, st.st_ino
        return True

    def trim(self) -> None:
        """Drop this mapping's pages from the process (they stay in the page
        cache, dirty ones included, and fault back in when touched)."""
        if self.mode != PRIVATE and self.size and hasattr(mmap, "MADV_DONTNEED"):
            self.mm.madvise(mmap.MADV_DONTNEED)

    def flush(self) -> None:
        if self.mm is not None and self.mode == WRITE:
            try:
                fs.msync(self.mm)
            except OSError as e:
                raise fs.error(e, "flush", self.path) from None

    def close(self) -> None:
        if self.mm is not None and self.mode == WRITE:
            try:
                fs.msync(self.mm)
            except OSError:
                pass
        self._drop()
