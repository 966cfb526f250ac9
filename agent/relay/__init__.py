"""The NATS JetStream relay (docs/RELAY.md): devices that cannot dial each
other sync through one nats-server. nats-py is imported only here, and only
when a relay is set up."""
