"""The sync commands' arguments: `serve`, `sync`, `peer add|list|remove|rename`,
`invite`, `join`, `id`.

Kept apart from commands.py so that building the parser (every mycelium
command does) does not import asyncio, ssl and zstandard: a `get` must stay
small and quick. The command bodies load on use.
"""
import os

DEFAULT_LISTEN = "0.0.0.0:7420"
DEFAULT_MAX_SKEW = 300


def _skew(s):
    import argparse
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError("--max-skew takes seconds, e.g. 300") from None
    if not 1 <= v <= 10 * 365 * 86400:
        raise argparse.ArgumentTypeError("--max-skew must be between 1 s and ten years")
    return v


def _add_skew(s):
    s.add_argument("--max-skew", type=_skew, metavar="SECONDS",
                   default=os.environ.get("MYCELIUM_MAX_SKEW") or DEFAULT_MAX_SKEW,
                   help="hold a peer's change stamped more than SECONDS ahead of this "
                        "device's clock until the clock gets there (`mycelium pending`); "
                        "default %(default)s, or $MYCELIUM_MAX_SKEW")


def accept_unsigned_default() -> bool:
    """$MYCELIUM_ACCEPT_UNSIGNED: the default of --accept-unsigned."""
    return os.environ.get("MYCELIUM_ACCEPT_UNSIGNED", "") not in ("", "0", "no", "false")


def _add_unsigned(s):
    s.add_argument("--accept-unsigned", action="store_true",
                   default=accept_unsigned_default(),
                   help="also take changes that no signature vouches for: those written by "
                        "versions before 0.2.0, while a fleet upgrades (a forged change is "
                        "unsigned too: use it only for the upgrade); or "
                        "$MYCELIUM_ACCEPT_UNSIGNED=1")


def _duration(text):
    import argparse
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        v = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        v = -1
    if not 10 <= v <= 30 * 86400:
        raise argparse.ArgumentTypeError("%r: give a time from 10s to 30d, e.g. 15m or 2h"
                                         % text)
    return v


def _lazy(name):
    def run(args):
        from . import commands
        return getattr(commands, name)(args)
    return run


def _relay_cmd(name):
    def run(args):
        from ..relay import commands
        return getattr(commands, name)(args)
    return run


def _register_relay(subparsers) -> None:
    from ..clihelp import add_command
    s = add_command(subparsers, "relay", "sync through the fleet's NATS JetStream relay",
                    description="Devices that cannot dial each other (phones on mobile "
                    "networks, devices behind NAT) sync through one nats-server with "
                    "JetStream on (`nats-server -js`). Each device publishes the changes the "
                    "stream lacks and takes those it lacks, checked as from a direct peer "
                    "(signatures, clock, quarantine); direct peers go on as before. Each "
                    "change is stored in the stream once. See docs/RELAY.md.")
    rsub = s.add_subparsers(dest="relay_cmd", metavar="ACTION")
    rsub.required = True
    a = add_command(rsub, "add", "use this relay (replaces the one set before)",
                    key="relay add")
    a.add_argument("url", metavar="nats://HOST:4222",
                   help="the nats-server (tls://HOST:4222 for one that requires TLS)")
    a.add_argument("--fleet", required=True,
                   help="the fleet's name, the same on every device (letters, digits, - _)")
    a.add_argument("--creds", metavar="FILE",
                   help="a NATS credentials file (.creds), if the server requires one")
    a.set_defaults(fn=_relay_cmd("cmd_relay_add"))
    a = add_command(rsub, "show", "the relay and what serve last did with it",
                    key="relay show")
    a.set_defaults(fn=_relay_cmd("cmd_relay_show"))
    a = add_command(rsub, "remove", "stop using the relay", key="relay remove")
    a.set_defaults(fn=_relay_cmd("cmd_relay_remove"))


def register(subparsers) -> None:
    from ..clihelp import add_command
    s = add_command(subparsers, "serve", "sync continuously with every known peer")
    s.add_argument("--listen", default=os.environ.get("MYCELIUM_LISTEN") or DEFAULT_LISTEN,
                   metavar="HOST:PORT",
                   help="where to accept peers (default %(default)s; :PORT is every address, "
                        "[ADDR]:PORT an IPv6 one, port 0 picks a free one and prints it)")
    s.add_argument("--log-format", choices=("text", "json"),
                   default=os.environ.get("MYCELIUM_LOG_FORMAT") or "text",
                   help="the log on stderr: text lines with date, level and device "
                        "(under systemd, journald priorities instead of dates), or one JSON "
                        "object per line; default %(default)s, or $MYCELIUM_LOG_FORMAT")
    s.add_argument("--http", default=os.environ.get("MYCELIUM_HTTP") or None,
                   metavar="HOST:PORT",
                   help="also serve the dashboard, /metrics and /healthz there (off by "
                        "default; e.g. 127.0.0.1:7421). An address other than loopback "
                        "needs the token in http.token, which serve logs in the URL")
    _add_skew(s)
    _add_unsigned(s)
    s.set_defaults(fn=_lazy("cmd_serve"))
    s = add_command(subparsers, "sync", "catch up once with PEER (its name, id or the start "
                    "of its id)")
    s.add_argument("peer")
    s.add_argument("--progress", action="store_true",
                   help="draw a progress bar on stderr even when it is not a terminal")
    _add_skew(s)
    _add_unsigned(s)
    s.set_defaults(fn=_lazy("cmd_sync"))
    s = add_command(subparsers, "peer", "add, list, rename or remove peers")
    psub = s.add_subparsers(dest="peer_cmd", metavar="ACTION")
    psub.required = True
    a = add_command(psub, "add", "add a peer by its device id and address", key="peer add")
    a.add_argument("id", help="the id `mycelium id` prints on that device")
    a.add_argument("addr", metavar="HOST:PORT", nargs="?",
                   help="where it listens; leave it out for a peer that only dials in "
                        "(a phone on changing networks)")
    a.add_argument("--name", help="a name to use instead of the id, e.g. garden-pi")
    m = a.add_mutually_exclusive_group()
    m.add_argument("--metered", dest="metered", action="store_const", const=True,
                   help="the link to it costs by the byte (a phone's mobile data): serve "
                        "syncs with it every metered_sync_s (900 s) instead of staying "
                        "connected")
    m.add_argument("--unmetered", dest="metered", action="store_const", const=False,
                   help="undo --metered")
    a.add_argument("--unchecked", action="store_true",
                   help="take an id without its check character (devices before 0.5 print "
                        "it so); check it by eye first")
    a.set_defaults(fn=_lazy("cmd_peer_add"))
    a = add_command(psub, "list", "known peers and how far behind each one is",
                    key="peer list")
    a.set_defaults(fn=_lazy("cmd_peer_list"))
    a = add_command(psub, "remove", "forget a peer: serve stops syncing with it and refuses "
                    "its connections", key="peer remove")
    a.add_argument("peer", help="its name, id or the start of its id")
    a.set_defaults(fn=_lazy("cmd_peer_remove"))
    a = add_command(psub, "rename", "give a peer a name", key="peer rename")
    a.add_argument("peer", help="its name, id or the start of its id")
    a.add_argument("name")
    a.set_defaults(fn=_lazy("cmd_peer_rename"))
    _register_relay(subparsers)
    s = add_command(subparsers, "invite", "print a one-time token (and its QR code) that "
                    "pairs another device with this one: `mycelium join TOKEN` there")
    s.add_argument("--addr", action="append", metavar="HOST:PORT",
                   help="where the other device can reach this one (repeat for several); "
                        "default: this machine's addresses at serve's port")
    s.add_argument("--ttl", type=_duration, default=_duration("15m"), metavar="TIME",
                   help="how long the token stays valid, e.g. 10m, 2h, 1d (default 15m)")
    s.add_argument("--name", help="the name this device gives the one that joins")
    s.add_argument("--qr", choices=("auto", "yes", "no"), default="auto",
                   help="draw the QR code: auto (on a terminal), yes or no")
    s.set_defaults(fn=_lazy("cmd_invite"))
    s = add_command(subparsers, "join", "pair with the device that printed TOKEN "
                    "(`mycelium invite`): each becomes a peer of the other")
    s.add_argument("token")
    s.add_argument("--addr", metavar="HOST:PORT",
                   help="where the inviting device can reach this one; leave it out and "
                        "this device dials in (a phone on changing networks)")
    s.add_argument("--name", help="the name this device gives the inviting one "
                   "(default: its host name)")
    s.set_defaults(fn=_lazy("cmd_join"))
    s = add_command(subparsers, "id", "print this device's id (give it to peers)")
    s.set_defaults(fn=_lazy("cmd_id"))
