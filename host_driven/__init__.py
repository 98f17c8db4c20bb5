"""The host side of a host-driven session: transports, framing, session, device client, executors."""
