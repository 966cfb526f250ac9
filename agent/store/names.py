"""Append-only interned tables of the store: field names (`fields`) and actor
ids (`actors`), small enough to keep in Python (docs/FORMAT.md).

    fields  per name:  u16 length, UTF-8 bytes, u32 crc32 of the two before
    actors  per actor: u64 id, u32 crc32 of the id

Each append is fdatasynced before it is used, so no record on disk can name
an entry that a power cut took away. After a crash, an entry cut short at the
end (a torn append) is dropped; any other damage raises StoreCorrupt, since
the ids in the records would then mean other names (the node rebuilds the
store from the op log).
"""
import os
import struct
import zlib

from .. import fs
from ..errors import StoreCorrupt, UsageError

_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")
_u64 = struct.Struct("<Q")
_crc = zlib.crc32


def _parse_fields(data):
    out, p = [], 0
    while p + 2 <= len(data):
        n = _u16.unpack_from(data, p)[0]
        end = p + 2 + n + 4
        if n == 0 or end > len(data) or _u32.unpack_from(data, end - 4)[0] != _crc(data[p:end - 4]):
            break
        try:
            out.append(data[p + 2:p + 2 + n].decode("utf-8"))
        except UnicodeDecodeError:
            break
        p = end
    return out, p


def _parse_actors(data):
    out, p = [], 0
    while p + 12 <= len(data):
        raw = data[p:p + 8]
        if _u32.unpack_from(data, p + 8)[0] != _crc(raw):
            break
        out.append(_u64.unpack(raw)[0])
        p += 12
    return out, p


class Table:
    """One append-only table. `items` is index -> value; `ids` value -> index."""

    def __init__(self, path: str, kind: str, writable: bool, repair_tail: bool):
        self.path = path
        self.kind = kind
        self.fd = -1
        try:
            data = fs.read_file(path)
        except FileNotFoundError:
            data = b""
        except OSError as e:
            raise fs.error(e, "read", path) from None
        items, end = (_parse_fields if kind == "fields" else _parse_actors)(data)
        if end < len(data) and not (repair_tail and self._partial(data[end:])):
            raise StoreCorrupt("store/%s is damaged at byte %d: the records' %s ids "
                               "cannot be trusted" % (kind, end, kind))
        self.items = items
        self.ids = {v: i for i, v in enumerate(items)}
        self.torn = len(data) - end
        if writable:
            try:
                self.fd = fs.open_fd(path, os.O_WRONLY | os.O_CREAT)
                if self.torn:
                    fs.ftruncate(self.fd, end)
                    fs.fdatasync(self.fd)
                os.lseek(self.fd, end, 0)
            except OSError as e:
                self.close()
                raise fs.error(e, "open", path) from None

    def _partial(self, rest) -> bool:
        """Is rest the start of an entry cut short (a torn append)? A whole
        entry that fails its CRC is damage, not a tear."""
        if self.kind == "actors":
            return len(rest) < 12
        return len(rest) < 2 or 2 + _u16.unpack_from(rest)[0] + 4 > len(rest)

    def __len__(self):
        return len(self.items)

    def add(self, value) -> int:
        """Index of value, appending it (durably) if it is new."""
        i = self.ids.get(value)
        if i is not None:
            return i
        if self.kind == "fields":
            raw = value.encode("utf-8")
            if not raw or len(raw) > 255:
                raise UsageError("a field name must be 1 to 255 bytes")
            entry = _u16.pack(len(raw)) + raw
        else:
            entry = _u64.pack(value)
        entry += _u32.pack(_crc(entry))
        if self.fd >= 0:  # (a read-only process keeps a new name in its memory only)
            pos = os.lseek(self.fd, 0, os.SEEK_CUR)
            try:
                fs.write(self.fd, entry)
                fs.fdatasync(self.fd)
            except OSError as e:
                try:
                    fs.ftruncate(self.fd, pos)
                    os.lseek(self.fd, pos, os.SEEK_SET)
                except OSError:
                    pass
                raise fs.error(e, "append to", self.path) from None
        i = self.ids[value] = len(self.items)
        self.items.append(value)
        return i

    def sync(self):
        if self.fd >= 0:
            fs.fdatasync(self.fd)

    def close(self):
        if self.fd >= 0:
            fs.close(self.fd)
            self.fd = -1
