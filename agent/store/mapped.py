"""A growable file-backed mmap: the building block of every store file."""
import mmap
import os

from ..errors import StoreError


class MappedFile:
    """A file mapped whole into memory, grown by doubling. Owns its fd."""

    __slots__ = ("path", "fd", "mm", "size")

    def __init__(self, path: str, min_size: int = 4096):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError("cannot open %s: %s; check the data directory's "
                             "permissions and free space" % (path, e.strerror)) from e
        size = os.fstat(self.fd).st_size
        if size < min_size:
            os.ftruncate(self.fd, min_size)
            size = min_size
        self.size = size
        self.mm = mmap.mmap(self.fd, size)

    def ensure(self, size: int) -> None:
        """Make the file at least size bytes long (doubling)."""
        if size <= self.size:
            return
        new = self.size
        while new < size:
            new *= 2
        try:
            os.ftruncate(self.fd, new)
            self.mm.resize(new)
        except OSError as e:
            raise StoreError("cannot grow %s to %d bytes: %s; free some disk space"
                             % (self.path, new, e.strerror)) from e
        self.size = new

    def trim(self) -> None:
        """Drop this mapping's pages from the process (they stay in the page
        cache, dirty ones included, and fault back in when touched)."""
        if self.mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            self.mm.madvise(mmap.MADV_DONTNEED)

    def flush(self) -> None:
        if self.mm is not None:
            self.mm.flush()

    def close(self) -> None:
        if self.mm is not None:
            self.mm.flush()
            self.mm.close()
            self.mm = None
            os.close(self.fd)
            self.fd = -1
