"""`streamseg client COMMAND`: talk to a `streamseg serve` server (the Python client `streamseg.client`).

    streamseg client add rtsp://cam1/stream --name cam1        # the server pulls it; prints the stream id
    streamseg client push clip.mp4 --name clip                 # decode here, push frames, print its events
    streamseg client list                                      # every stream's status (JSON)
    streamseg client status cam1
    streamseg client events [cam1]                             # events as JSON lines as they come (Ctrl-C ends)
    streamseg client segments cam1                             # the segment events so far
    streamseg client wait cam1                                 # until it has finished; its final status
    streamseg client remove cam1

--server (default http://127.0.0.1:8000); the token for add, push and remove is read from --token-file
or $STREAMSEG_TOKEN. Several --server options are replicas: each stream goes to the one that owns its
name (rendezvous hashing, `streamseg.client.owner_of`), `list` gathers all (docs/serve.md, "Replicas").
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("client", help="control a streamseg serve server: add, push, list, events, remove",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", action="append", default=None,
                   help="the server's base URL (default http://127.0.0.1:8000); repeat for replicas")
    p.add_argument("--token-file", default=None, help="file holding the control token (else $STREAMSEG_TOKEN)")
    cmds = p.add_subparsers(dest="client_command", required=True, metavar="COMMAND")
    add = cmds.add_parser("add", help="a stream the server pulls (file, URL, device); prints its id")
    add.add_argument("source")
    add.add_argument("--name", default=None)
    add.add_argument("--realtime", action="store_true", help="pace a file at its frame rate")
    add.add_argument("--reconnect", action="store_true",
                     help="a live source (URL, device) that ends or fails is opened again and the stream goes on")
    push = cmds.add_parser("push", help="decode a video here and push its frames; prints its events")
    push.add_argument("source")
    push.add_argument("--name", default=None)
    cmds.add_parser("list", help="every stream's status")
    for name, text in (("status", "one stream's status"), ("remove", "stop a stream"),
                       ("segments", "a stream's segment events so far"), ("wait", "wait until a stream finished")):
        cmds.add_parser(name, help=text).add_argument("stream")
    ev = cmds.add_parser("events", help="events as JSON lines as they come (one stream until it ends, or all)")
    ev.add_argument("stream", nargs="?", default=None)
    p.set_defaults(func=run_client)


def _print(obj) -> None:
    print(json.dumps(obj), flush=True)


def run_client(args: argparse.Namespace) -> int:
    try:
        from ..client import Client, ReplicaClient, ServerError, read_token
    except ImportError as e:
        raise SystemExit(f"error: the client needs the serve extra ({e.name} is missing): pip install -e '.[serve]'")
    import httpx

    servers = args.server or ["http://127.0.0.1:8000"]
    if len(servers) > 1 and args.client_command == "events" and args.stream is None:
        raise SystemExit("error: events of all streams: ask one --server at a time")
    try:
        token = read_token(args.token_file)
        with (Client(servers[0], token) if len(servers) == 1 else ReplicaClient(servers, token)) as client:
            cmd = args.client_command
            if cmd == "add":
                print(client.add(args.source, args.name, realtime=args.realtime, reconnect=args.reconnect),
                      flush=True)
            elif cmd == "push":
                sid = client.push_video(args.source, args.name)
                client.wait(sid)
                for event in client.segments(sid):
                    _print(event)
                print(f"{sid}: {json.dumps(client.status(sid))}", file=sys.stderr)
            elif cmd == "list":
                _print(client.streams())
            elif cmd == "status":
                _print(client.status(args.stream))
            elif cmd == "remove":
                client.remove(args.stream)
            elif cmd == "segments":
                for event in client.segments(args.stream):
                    _print(event)
            elif cmd == "wait":
                _print(client.wait(args.stream))
            elif cmd == "events":
                try:
                    for event in client.events(args.stream):
                        _print(event)
                except KeyboardInterrupt:
                    pass
    except ServerError as e:
        raise SystemExit(f"error: {' '.join(servers)}: {e}") from None
    except (httpx.HTTPError, OSError, ValueError) as e:
        raise SystemExit(f"error: {' '.join(servers)}: {type(e).__name__}: {e}") from None
    return 0
