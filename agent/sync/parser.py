"""The sync commands' arguments: `serve`, `sync`, `peer add|list`, `id`.

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


def _lazy(name):
    def run(args):
        from . import commands
        return getattr(commands, name)(args)
    return run


def register(subparsers) -> None:
    s = subparsers.add_parser("serve", help="sync continuously with every known peer")
    s.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="where to accept peers (default %(default)s; port 0 picks a free "
                        "one and prints it)")
    _add_skew(s)
    _add_unsigned(s)
    s.set_defaults(fn=_lazy("cmd_serve"))
    s = subparsers.add_parser("sync", help="catch up once with PEER (a device id or its start)")
    s.add_argument("peer")
    s.add_argument("--progress", action="store_true",
                   help="draw a progress bar on stderr even when it is not a terminal")
    _add_skew(s)
    _add_unsigned(s)
    s.set_defaults(fn=_lazy("cmd_sync"))
    s = subparsers.add_parser("peer", help="add or list peers")
    psub = s.add_subparsers(dest="peer_cmd", metavar="ACTION")
    psub.required = True
    a = psub.add_parser("add", help="add a peer by its device id and address")
    a.add_argument("id", help="the id `mycelium id` prints on that device")
    a.add_argument("addr", metavar="HOST:PORT")
    a.set_defaults(fn=_lazy("cmd_peer_add"))
    a = psub.add_parser("list", help="known peers and how far behind each one is")
    a.set_defaults(fn=_lazy("cmd_peer_list"))
    s = subparsers.add_parser("id", help="print this device's id (give it to peers)")
    s.set_defaults(fn=_lazy("cmd_id"))
