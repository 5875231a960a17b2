"""``edgec serve`` and ``edgec package`` subcommands (heavy imports inside the handlers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgec.core.cli_kit import Argument, Option, command

SECTION = "Serving"
"""The heading of ``serve`` and ``package`` in ``edgec --help``."""

if TYPE_CHECKING:
    from .app import ServeOptions


def commands() -> list[click.Command]:
    """``edgec serve`` and ``edgec package``."""
    path = click.Path(path_type=Path)
    serve = [
        Argument("bundle", help="a bundle directory, or a store URL to follow releases from (with --channel)"),
        Option("--channel", default="stable", help="with a store: the release channel to follow"),
        Option("--device-id", default=None, help="with a store: this server's id for rollout cohorts and reports"),
        Option("--state-dir", type=path, default=Path(".edgec-serve"), help="with a store: where releases are unpacked"),
        Option("--trusted-root", type=path, help="with a store: root.json to trust on first run"),
        Option("--interval", type=float, default=30.0, help="with a store: seconds between release checks"),
        Option("--host", default="127.0.0.1"),
        Option("--port", type=int, default=8080),
        Option("--max-batch", type=int, default=16, help="most samples per model run; 1 turns batching off"),
        Option("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with"),
        Option("--workers", type=int, default=1, help="model runs in parallel (inference threads)"),
        Option("--threads", type=int, default=None, help="intra-op threads of the runtime"),
        Option("--max-body-mb", type=float, default=16.0, help="largest request body (413 above)"),
        *_limit_flags(),
    ]
    package = [
        Argument("bundle", type=path),
        Option("--out", type=path, required=True),
        Option("--image", default=None, help="image name; default edgec-serve-<bundle>"),
        Option("--port", type=int, default=8080),
        Option("--replicas", type=int, default=2),
        Option("--force", is_flag=True),
        Option("--wheel", type=path, default=None,
               help="the edgec wheel to install in the image; default: built from this edgec's source tree"),
    ]
    return [command("serve", cmd_serve, serve, help="serve a bundle over HTTP with dynamic batching, metrics and drift"),
            command("package", cmd_package, package,
                    help="write a Dockerfile and Kubernetes manifests for serving a bundle")]


def cmd_serve(args: argparse.Namespace) -> int:
    from edgec.core.errors import ConfigError, require

    from .app import ServerState, create_app, uvicorn_config
    from .host import ModelHost, load_bundle

    if args.max_batch < 1 or args.workers < 1 or args.max_wait_ms < 0:
        raise ConfigError("--max-batch and --workers must be at least 1 and --max-wait-ms at least 0")
    uvicorn = require("uvicorn", "serve", "edgec serve")
    options = _serve_options(args)
    bundle = Path(args.bundle)
    if (bundle / "manifest.json").is_file():
        state = ServerState(ModelHost(load_bundle(bundle, args.threads)), options)
    else:
        import socket

        from .follow import current_release, first_bundle, follower, make_agent

        if args.interval <= 0:
            raise ConfigError("--interval must be positive")
        from edgec.cloud_sync.names import check_channel, check_device_id

        device_id = check_device_id(args.device_id or f"serve-{socket.gethostname()}")
        agent = make_agent(args.bundle, device_id, args.state_dir, check_channel(args.channel), args.trusted_root)
        first = first_bundle(agent)
        state = ServerState(ModelHost(load_bundle(first, args.threads, current_release(agent))), options)
        state.follow = follower(agent, args.interval)
    host = state.host
    print(f"serving {host.current.describe()} on http://{args.host}:{args.port} (max batch {args.max_batch}, "
          f"max wait {args.max_wait_ms} ms)", flush=True)
    server = uvicorn.Server(uvicorn_config(create_app(state), options, args.host, args.port))
    server.run()
    if not server.started:
        raise ConfigError(f"could not serve on {args.host}:{args.port} (see uvicorn's message above)")
    return 0


def _limit_flags() -> list[click.Parameter]:
    """Bounds on what a client can make the server hold (README, Security)."""
    section = "Limits on what a client can make the server hold"
    return [
        Option("--max-decoded-mb", type=float, default=64.0, section=section,
               help="most MB of arrays one request may decode to (zip bombs get 413)"),
        Option("--decode-threads", type=int, default=2, section=section,
               help="request bodies decoded at once, off the event loop"),
        Option("--timeout-head", type=float, default=10.0, section=section,
               help="seconds a connection may take to send a complete request head (then closed)"),
        Option("--timeout-body", type=float, default=60.0, section=section,
               help="seconds a request body may take to arrive (408)"),
        Option("--timeout-keep-alive", type=int, default=5, section=section,
               help="seconds an idle keep-alive connection stays open"),
        Option("--limit-concurrency", type=int, default=256, section=section,
               help="connections plus requests in flight above which requests get 503"),
        Option("--max-head-kb", type=int, default=64, section=section, help="largest request head in kB (431 above)"),
    ]


def _serve_options(args: argparse.Namespace) -> ServeOptions:
    from edgec.core.errors import ConfigError

    from .app import ServeOptions

    positive = {"--max-body-mb": args.max_body_mb, "--max-decoded-mb": args.max_decoded_mb,
                "--decode-threads": args.decode_threads, "--timeout-head": args.timeout_head,
                "--timeout-body": args.timeout_body, "--timeout-keep-alive": args.timeout_keep_alive,
                "--limit-concurrency": args.limit_concurrency, "--max-head-kb": args.max_head_kb}
    bad = [f"{flag} {value}" for flag, value in positive.items() if not value > 0]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: must be positive")
    mb = 1024 * 1024
    return ServeOptions(args.max_batch, args.max_wait_ms, args.workers, int(args.max_body_mb * mb),
                   max_decoded_bytes=int(args.max_decoded_mb * mb), decode_threads=args.decode_threads,
                   timeout_head=args.timeout_head, timeout_body=args.timeout_body,
                   timeout_keep_alive=args.timeout_keep_alive, limit_concurrency=args.limit_concurrency,
                   max_head_bytes=args.max_head_kb * 1024)


def cmd_package(args: argparse.Namespace) -> int:
    from .package import write_package

    written = write_package(args.bundle, args.out, image=args.image, port=args.port, replicas=args.replicas,
                            force=args.force, wheel=args.wheel)
    for path in written:
        print(path)
    return 0
