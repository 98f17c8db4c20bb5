"""`utvm farm node` (serve one board under a key of TVM's RPC tracker) and `utvm farm status`.

    utvm farm node --tracker 127.0.0.1:9190 --key mps2_an386 baremetal -o board=mps2_an386
    utvm farm status --tracker 127.0.0.1:9190

A client runs a model on a farm board with `utvm run --tracker H:P --key K MODEL ...`. See
docs/farm.md for a walk-through and the threat model.
"""

from __future__ import annotations

import json

from utvm.farm import wire
from utvm.project_api.options import parse_option_args

from .common import CommandParser, add_option_argument, resolve_template


def register(subparsers) -> None:
    """Add `farm node` and `farm status` to the `utvm` command line."""
    farm = subparsers.add_parser(
        "farm", help="share boards through TVM's RPC tracker: serve a board, or list the pool",
        description="Boards shared through TVM's own RPC tracker (python -m tvm.exec.rpc_tracker). "
        "Run a model on one with `utvm run --tracker HOST:PORT --key KEY MODEL`.")
    commands = farm.add_subparsers(dest="farm_command", metavar="COMMAND", parser_class=CommandParser)
    farm.set_defaults(func=lambda args: _usage(farm))

    node = commands.add_parser(
        "node", help="serve one board under a key of the tracker",
        description="Serve one board under KEY: a TVM RPC server registered with the tracker (or reached "
        "through a proxy) whose functions generate, build and flash a project from the client's model "
        "archive with TEMPLATE, and carry the device's bytes. One session at a time; the tracker queues "
        "the others. Stop it with Ctrl-C or SIGTERM.")
    node.add_argument("template", metavar="TEMPLATE",
                      help="template name (see `utvm templates`) or directory")
    node.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the TVM RPC tracker")
    node.add_argument("--key", required=True, help="the key clients ask for, e.g. the board's name")
    add_option_argument(node, "a project option of the template, e.g. -o board=mps2_an386 (repeatable); "
                        "clients cannot change these")
    node.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1; any other needs --token-file)")
    node.add_argument("--port", type=int, default=9091, help="first port to try (default 9091)")
    node.add_argument("--port-end", type=int, metavar="PORT",
                      help="ports tried stop before this one (default: PORT + 100)")
    node.add_argument("--through-proxy", metavar="HOST:PORT",
                      help="connect out to a TVM RPC proxy (python -m tvm.exec.rpc_proxy --tracker ...) "
                      "instead of listening; the proxy registers the key with its tracker")
    node.add_argument("--token-file", metavar="FILE",
                      help="a file whose first line is the token clients must present")
    node.add_argument("--hello-timeout", type=float, default=60.0, metavar="SECONDS",
                      help="end a session that has not presented the token this long after connecting, "
                      "so that a stuck client frees the board (default 60)")
    node.set_defaults(func=cmd_node)

    status = commands.add_parser(
        "status", help="list the tracker's keys with free, busy and queued counts",
        description="The keys of the tracker with their nodes, free, busy and queued counts, from the "
        "tracker's own summary.")
    status.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the TVM RPC tracker")
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
    status.add_argument("--wait", action="append", default=[], metavar="KEY",
                        help="first wait until KEY has a free node (repeatable), e.g. in a script that "
                        "just started its nodes")
    status.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="how long --wait waits (default 120)")
    status.set_defaults(func=cmd_status)


def _usage(parser) -> int:
    parser.print_help()
    return 2


def cmd_node(args) -> int:
    from utvm.farm.node import NodeConfig, serve_node

    config = NodeConfig(
        tracker=wire.parse_address(args.tracker),
        key=args.key,
        template_dir=resolve_template(args.template),
        options=parse_option_args(args.options),
        host=args.host,
        port=args.port,
        port_end=args.port_end if args.port_end is not None else args.port + 100,
        through_proxy=(wire.parse_address(args.through_proxy, "--through-proxy")
                       if args.through_proxy else None),
        token=wire.read_token_file(args.token_file) if args.token_file else "",
        verbose=args.verbose,
        hello_timeout=args.hello_timeout,
    )
    return serve_node(config, say=lambda text: print(text, flush=True))


def cmd_status(args) -> int:
    from utvm.farm.status import farm_status, format_status, wait_for_keys

    address = wire.parse_address(args.tracker)
    rows = wait_for_keys(address, args.wait, args.timeout) if args.wait else farm_status(address)
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    elif not rows:
        print(f"tracker {args.tracker}: no keys yet (no node has registered)")
    else:
        print(f"tracker {args.tracker}")
        print(format_status(rows))
    return 0
