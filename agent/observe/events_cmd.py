"""`mycelium events`: read the timeline (agent/events.py). Read-only: it
works beside a running serve and writes nothing."""
import json
import sys
import time

from .. import events as E
from ..errors import UsageError

__all__ = ["cmd_events", "format_event", "Names"]

# details not repeated after the kind on a text line
_SKIP = ("time", "kind", "device")


class Names:
    """Device ids as people read them: this device, a peer's name, else the
    short id; each with its fleet colour (agent/observe/colours.py)."""

    def __init__(self, data_dir):
        from ..sync.devid import display_id
        from ..sync.identity import device_id
        from ..sync.daemon import _known
        try:
            self.me = display_id(device_id(data_dir))
        except Exception:    # no identity yet: events can still be read
            self.me = None
        try:
            peers = _known(data_dir)
        except Exception:
            peers = {}
        self.names = {display_id(k): v.get("name") for k, v in peers.items()}
        from .colours import fleet_colours
        self.colours = fleet_colours([i for i in [self.me, *self.names] if i])

    def label(self, device):
        if device is None or device == self.me:
            return "this-device"
        return self.names.get(device) or device[:7]

    def badge(self, device, stream):
        from .colours import badge
        colour = self.colours.get(self.me if device is None else device)
        text = self.label(device)
        return badge(text, colour, stream) if colour else text


def format_event(ev, names, stream=None) -> str:
    t = ev.get("time", 0)
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"
    who = names.badge(ev.get("device"), stream or sys.stdout)
    rest = " ".join("%s=%s" % (k, v if not isinstance(v, str) or " " not in v else json.dumps(v))
                    for k, v in ev.items() if k not in _SKIP and v is not None)
    return "%s  %s  %s  %s" % (when, who, ev.get("kind"), rest)


def cmd_events(args):
    from ..node import read_identity
    read_identity(args.data_dir)          # a clear error for a directory that is not one
    try:
        since = E.parse_since(args.since) if args.since else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    kinds = tuple(k for ks in (args.kind or ()) for k in ks.split(",") if k)
    names = None if args.json else Names(args.data_dir)

    def show(ev):
        if args.json:
            print(json.dumps(ev, ensure_ascii=False), flush=args.follow)
        else:
            print(format_event(ev, names), flush=args.follow)

    if not args.follow:
        evs = E.read(args.data_dir, since, kinds)
        if args.lines:
            evs = evs[-args.lines:]
        for ev in evs:
            show(ev)
        if not args.json and not evs:
            print("(no events%s)" % (" match" if since or kinds else " yet"), file=sys.stderr)
        return 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    first = E.read(args.data_dir, since, kinds)
    for ev in first[-args.lines:] if args.lines else first:
        show(ev)
    seen = len(first)
    try:
        for i, ev in enumerate(E.follow(args.data_dir, since, kinds, deadline=deadline)):
            if i >= seen:
                show(ev)
    except KeyboardInterrupt:
        pass
    return 0
