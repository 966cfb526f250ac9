"""sync/relay.json: where this device's fleet relay is.

{"version": 1, "url": "nats://HOST:4222", "fleet": NAME, "creds": PATH|null,
 "added": unix}

Written atomically with its own CRC (agent/fs.py); `mycelium relay add`
checks every part before writing, so serve never reads a half-made one.
"""
import os
import re
import time

from .. import fs
from ..errors import UsageError

__all__ = ["load", "save", "remove", "path", "check_url", "check_fleet", "stream_name",
           "subject", "SUBJECTS"]

FLEET = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def path(data_dir) -> str:
    return os.path.join(data_dir, "sync", "relay.json")


def check_url(url: str) -> str:
    m = re.match(r"^(nats|tls)://([^/:@\s]+|\[[0-9A-Fa-f:]+\])(:(\d{1,5}))?$", url or "")
    if not m or (m.group(4) and not 0 < int(m.group(4)) < 65536):
        raise UsageError("%r is not a NATS address: give nats://HOST:4222 (or tls://HOST:4222 "
                         "for a server that requires TLS)" % url)
    return url


def check_fleet(name: str) -> str:
    if not FLEET.match(name or ""):
        raise UsageError("%r is not a fleet name: use 1 to 32 letters, digits, '-' or '_', "
                         "the same on every device of the fleet" % name)
    return name


def stream_name(fleet: str) -> str:
    return "MYC_" + fleet


SUBJECTS = "myc.%s.c.*"       # one subject per actor: myc.FLEET.c.ACTORHEX


def subject(fleet: str, actor: int) -> str:
    return "myc.%s.c.%016x" % (fleet, actor)


def load(data_dir):
    """The relay set up on this device, or None."""
    return fs.read_json(path(data_dir), "this device's relay settings",
                        "Set the relay up again with `mycelium relay add nats://HOST:4222 "
                        "--fleet NAME`", default=None)


def save(data_dir, url, fleet, creds=None) -> dict:
    check_url(url)
    check_fleet(fleet)
    if creds is not None:
        creds = os.path.abspath(creds)
        try:
            with open(creds, "rb") as f:
                f.read(1)
        except OSError as e:
            raise UsageError("cannot read the credentials file %s: %s" % (creds, e.strerror))
    cfg = {"version": 1, "url": url, "fleet": fleet, "creds": creds, "added": int(time.time())}
    os.makedirs(os.path.dirname(path(data_dir)), exist_ok=True)
    fs.write_json(path(data_dir), cfg)
    return cfg


def remove(data_dir) -> bool:
    try:
        os.unlink(path(data_dir))
        return True
    except FileNotFoundError:
        return False
