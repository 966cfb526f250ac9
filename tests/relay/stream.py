"""Read a relay stream back as it is stored in nats-server, for the tests."""
import asyncio


def read_stream(url, stream):
    """Every message of the stream: [(stream seq, subject, headers, data)]."""
    async def go():
        import nats
        from nats.js.errors import NotFoundError
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(stream)
            except NotFoundError:
                return []
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    m = await js.get_msg(stream, seq)
                except NotFoundError:
                    continue
                out.append((m.seq, m.subject, dict(m.headers or {}), m.data))
            return out
        finally:
            await nc.close()
    return asyncio.run(go())


def publish(url, subj, data, headers=None):
    """Publish one message as any holder of the fleet's credentials could."""
    async def go():
        import nats
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            return (await nc.jetstream().publish(subj, data, headers=headers)).seq
        finally:
            await nc.close()
    return asyncio.run(go())
