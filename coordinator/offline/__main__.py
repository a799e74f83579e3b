"""``python -m coordinator.offline --script FILE [--host H] [--port P]``

Prints the base URL as the first stdout line, then serves until SIGINT or SIGTERM.
A bad script is one line on stderr naming the file and the field, exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from coordinator.errors import CoordinatorError
from coordinator.offline.script import Script, load_script
from coordinator.offline.server import ModelServer


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m coordinator.offline",
        description="Serve a scripted Anthropic Messages API for the claude CLI, offline.",
    )
    parser.add_argument("--script", required=True, help="JSON script file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    return parser.parse_args(argv)


async def _serve(script: Script, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = ModelServer(script)
    print(await server.start(host, port), flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        script = load_script(args.script)
        asyncio.run(_serve(script, args.host, args.port))
    except CoordinatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(
            f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
