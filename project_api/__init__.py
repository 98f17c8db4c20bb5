"""The Project API: wire protocol, client, server base class, option schema and the `utvm` CLI."""
