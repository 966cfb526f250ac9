"""The filesystem seam: every open, write, fsync, rename and mapping growth
the agent makes goes through this module.

The functions below delegate to one implementation object, `RealFS` unless a
test installs another (tests/errorfs.py injects ENOSPC, EIO, short writes
and simulated power cuts). Modules call `fs.write(...)`, never `os.write`.

Also here, once each:
  atomic_write()   temp file, fsync, rename, fsync of the directory
  write_json() / read_json()   small JSON files carrying their own CRC
  error()          an OSError turned into a typed StoreError that says what to do
Files are created 0600 and directories 0700; set_group_access() (the CLI
calls it when MYCELIUM_GROUP names a group) makes them 0640 and 02750 with
that group, so its members may read the data.
"""
import errno
import json
import mmap as _mmap
import os
import zlib

from .errors import DiskFault, DiskFull, StoreCorrupt, StoreError

__all__ = ["RealFS", "install", "current", "error", "atomic_write", "write_json", "read_json",
           "FILE_MODE", "DIR_MODE", "set_group_access"]

FILE_MODE = 0o600
DIR_MODE = 0o700
_GROUP = None      # gid given to new directories (set_group_access)


def set_group_access(gid: int) -> None:
    """Let group gid read what is created from now on: files 0640,
    directories 02750 owned by that group (setgid, so the files made in them
    take the group too)."""
    global FILE_MODE, DIR_MODE, _GROUP
    FILE_MODE, DIR_MODE, _GROUP = 0o640, 0o2750, gid
_ZEROS = bytes(1 << 16)


class RealFS:
    """The operating system, with the few policies the agent relies on."""

    def open(self, path, flags, mode=None):
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0),
                       FILE_MODE if mode is None else mode)

    def close(self, fd):
        os.close(fd)

    def write(self, fd, data) -> int:
        """Write all of data (a loop over short writes); raises OSError."""
        done = os.write(fd, data)
        if done == len(data):
            return done
        view = memoryview(data)
        while done < len(view):
            done += os.write(fd, view[done:])
        return done

    def pwrite(self, fd, data, offset) -> int:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
        return done

    def read_file(self, path) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def fsync(self, fd):
        os.fsync(fd)

    def fdatasync(self, fd):
        os.fdatasync(fd)

    def ftruncate(self, fd, size):
        os.ftruncate(fd, size)

    def allocate(self, fd, offset, length):
        """Give [offset, offset+length) real blocks, so that a page fault in
        a mapping of it can never raise SIGBUS on a full disk."""
        try:
            os.posix_fallocate(fd, offset, length)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        end = offset + length  # no fallocate here (some FUSE, old vfat): write zeros
        pos = offset
        while pos < end:
            pos += os.pwrite(fd, _ZEROS[:min(len(_ZEROS), end - pos)], pos)

    def rename(self, src, dst):
        os.replace(src, dst)

    def unlink(self, path):
        os.unlink(path)

    def mkdir(self, path, mode=None):
        """makedirs, and the new directories made durable in their parents."""
        made = []
        p = os.path.abspath(path)
        while not os.path.isdir(p):
            made.append(p)
            p = os.path.dirname(p)
        os.makedirs(path, mode=DIR_MODE if mode is None else mode, exist_ok=True)
        for d in reversed(made):
            if _GROUP is not None:
                os.chown(d, -1, _GROUP)
                os.chmod(d, DIR_MODE if mode is None else mode)  # mkdir drops the setgid bit
            self.fsync_dir(os.path.dirname(d))

    def fsync_dir(self, path):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def mmap(self, fd, size, writable=True):
        return _mmap.mmap(fd, size, access=_mmap.ACCESS_WRITE if writable else _mmap.ACCESS_READ)

    def msync(self, mm):
        mm.flush()


_impl = RealFS()


def install(impl):
    """Use impl for every file operation from now on; returns the previous one."""
    global _impl
    old, _impl = _impl, impl
    return old


def current():
    return _impl


# The module-level calls every other module makes.

def open_fd(path, flags, mode=None):
    return _impl.open(path, flags, mode)


def close(fd):
    _impl.close(fd)


def close_quietly(fd) -> int:
    """Close fd if it is open (>= 0), ignoring errors; returns -1, the
    closed value, for `self.fd = fs.close_quietly(self.fd)`."""
    if fd >= 0:
        try:
            _impl.close(fd)
        except OSError:
            pass
    return -1


def write(fd, data):
    return _impl.write(fd, data)


def pwrite(fd, data, offset):
    return _impl.pwrite(fd, data, offset)


def read_file(path):
    return _impl.read_file(path)


def fsync(fd):
    _impl.fsync(fd)


def fdatasync(fd):
    _impl.fdatasync(fd)


def ftruncate(fd, size):
    _impl.ftruncate(fd, size)


def allocate(fd, offset, length):
    _impl.allocate(fd, offset, length)


def rename(src, dst):
    _impl.rename(src, dst)


def unlink(path):
    _impl.unlink(path)


def mkdir(path):
    _impl.mkdir(path)


def fsync_dir(path):
    _impl.fsync_dir(path)


def mmap(fd, size, writable=True):
    return _impl.mmap(fd, size, writable)


def msync(mm):
    _impl.msync(mm)


# -- typed errors


def error(e: OSError, action: str, path: str) -> StoreError:
    """The typed error for an OSError met while doing `action` on `path`."""
    what = "cannot %s %s" % (action, path)
    n = getattr(e, "errno", None)
    if n in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull("%s: no space left on the device. Nothing was written; free some "
                        "space (or remove old backups) and retry: mycelium picks up where "
                        "it stopped" % what)
    if n == errno.EIO:
        return DiskFault("%s: the storage device reported an I/O error; check the SD card or "
                         "disk (`dmesg`), then run `mycelium repair`" % what)
    if n in (errno.EACCES, errno.EPERM):
        return StoreError("%s: permission denied; run mycelium as the user that owns the data "
                          "directory (docs/OPERATIONS.md, 'Permissions')" % what)
    if n == errno.EROFS:
        return DiskFault("%s: the file system is read-only (remounted after errors?); check "
                         "`dmesg` and remount it read-write" % what)
    return StoreError("%s: %s" % (what, e.strerror or e))


# -- one atomic-write helper


def atomic_write(path: str, data: bytes, mode: int = None) -> None:
    """Replace path with data so that a crash leaves the old or the new
    content, never a mix: temp file, fsync, rename, fsync of the directory.
    mode: the file's mode if not FILE_MODE (a private key stays 0600)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        fd = _impl.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            _impl.write(fd, data)
            _impl.fsync(fd)
        finally:
            _impl.close(fd)
        _impl.rename(tmp, path)
        _impl.fsync_dir(os.path.dirname(path) or ".")
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise error(e, "write", path) from None


# -- small JSON files with a CRC


CRC_KEY = "crc32"


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def write_json(path: str, obj: dict, mode: int = None) -> None:
    """Atomically write obj as readable JSON carrying the CRC of its content."""
    body = dict(obj)
    body.pop(CRC_KEY, None)
    body[CRC_KEY] = "%08x" % zlib.crc32(_canonical(body))
    atomic_write(path, (json.dumps(body, sort_keys=True, indent=1, ensure_ascii=False)
                        + "\n").encode(), mode)


def read_json(path: str, what: str, fix: str, default=None, legacy_ok: bool = True):
    """The object in path, its CRC checked. A missing file gives default;
    a damaged one raises StoreCorrupt naming the file, `what` it holds and
    the `fix`. A file written before CRCs existed is accepted if legacy_ok."""
    try:
        raw = _impl.read_file(path)
    except FileNotFoundError:
        return default
    except OSError as e:
        raise error(e, "read", path) from None
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError
    except ValueError:
        raise StoreCorrupt("%s (%s) is damaged: it is not JSON. %s" % (path, what, fix)) from None
    crc = obj.pop(CRC_KEY, None)
    if crc is None:
        if legacy_ok:
            return obj
        raise StoreCorrupt("%s (%s) has no checksum. %s" % (path, what, fix))
    if crc != "%08x" % zlib.crc32(_canonical(obj)):
        raise StoreCorrupt("%s (%s) is damaged: its checksum does not match. %s"
                           % (path, what, fix))
    return obj
