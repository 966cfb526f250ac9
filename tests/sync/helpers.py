"""Two sessions wired by in-memory byte queues."""
from agent.node import Node, init_identity
from agent.sync.session import Session
from agent.sync.transport import settle


def make_node(path, **kw):
    init_identity(str(path))
    return Node(str(path), **kw)


def pair(a, b, **kw):
    sa = Session(a, "dev-a", "dev-b", **kw)
    sb = Session(b, "dev-b", "dev-a", **kw)
    sa.start()
    sb.start()
    return sa, sb


def run(sa, sb, rounds=10_000):
    """Shuttle bytes until both are caught up or closed; returns all events."""
    evs = []
    for _ in range(rounds):
        moved = False
        for s, o in ((sa, sb), (sb, sa)):
            s.pump()
            data = s.data_to_send()
            if data:
                settle(o, data)
                moved = True
        evs += sa.events() + sb.events()
        if (sa.caught_up and sb.caught_up) or sa.closed or sb.closed:
            # deliver what is still queued (e.g. a BYE)
            for s, o in ((sa, sb), (sb, sa)):
                data = s.data_to_send()
                if data:
                    settle(o, data)
            evs += sa.events() + sb.events()
            return evs
        if not moved:
            break
    return evs


def state(node):
    return dict(node.scan(""))
