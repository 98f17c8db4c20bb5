"""The Project API: wire protocol, client, server base class, option schema and the `utvm` CLI.

- ``server``: the server base a template's ``microtvm_api_server.py`` builds on (standard library only);
- ``client``: ``ProjectAPIClient``, which launches a server and calls it with deadlines;
- ``options``: validation and coercion of project options;
- ``project``: ``TemplateProject`` and ``GeneratedProject``;
- ``errors``: ``UserError`` and ``ProjectAPIError``;
- ``cli``: the ``utvm`` command.

See docs/project-api.md.
"""
