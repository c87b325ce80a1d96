"""``python -m mt5_sync.api``: serve the manual sync API with uvicorn.

Binds 127.0.0.1 by default (``MT5SYNC_API_HOST``/``--host`` to expose it, normally behind a
TLS-terminating proxy): the API key and user tokens must not cross a network in clear text.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from mt5_sync.api.app import create_app
from mt5_sync.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt5_sync.api",
                                     description="Serve the mt5-sync manual sync API.")
    parser.add_argument("--host", default=None, help="default: MT5SYNC_API_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: MT5SYNC_API_PORT or 8080")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Several workers need an import string; the app built above only proved the config.
    target: object = "mt5_sync.api.app:app_from_env" if args.workers > 1 else app
    uvicorn.run(target, factory=args.workers > 1, workers=args.workers,  # type: ignore[arg-type]
                host=args.host or settings.api_host, port=args.port or settings.api_port,
                log_level=args.log_level, proxy_headers=True, server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
