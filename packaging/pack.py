"""Pack a Nuitka standalone folder into one file behind packaging/launcher.

    python packaging/pack.py LAUNCHER DIST_FOLDER OUT [--level 19]

OUT = LAUNCHER bytes + one zstd frame of records (u16 path length, path,
u32 mode, u64 size, data; a zero length ends) + the trailer
(u64 offset, u64 size, 32-char build id, b"MYCPACK1"), all little-endian.
The build id is the start of the sha256 of the uncompressed records, so a
rebuilt binary with other contents unpacks to a new folder.
"""
import argparse
import hashlib
import io
import os
import struct
import sys

import zstandard


def records(root):
    out = io.BytesIO()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root).encode()
            with open(path, "rb") as f:
                data = f.read()
            mode = os.stat(path).st_mode & 0o777
            out.write(struct.pack("<H", len(rel)) + rel + struct.pack("<IQ", mode, len(data)))
            out.write(data)
    out.write(struct.pack("<H", 0))
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("launcher")
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--level", type=int, default=19)
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.folder, "mycelium")):
        sys.exit("%s has no mycelium executable" % a.folder)
    raw = records(a.folder)
    build_id = hashlib.sha256(raw).hexdigest()[:32].encode()
    params = zstandard.ZstdCompressionParameters.from_level(
        a.level, threads=-1, window_log=23)
    comp = zstandard.ZstdCompressor(compression_params=params).compress(raw)
    with open(a.launcher, "rb") as f:
        head = f.read()
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head)
        f.write(comp)
        f.write(struct.pack("<QQ", len(head), len(comp)) + build_id + b"MYCPACK1")
    os.chmod(tmp, 0o755)
    os.replace(tmp, a.out)
    print("packed %s: %d bytes -> %d (+%d launcher), id %s" % (
        a.out, len(raw), len(comp), len(head), build_id.decode()),
        file=sys.stderr)


if __name__ == "__main__":
    main()
