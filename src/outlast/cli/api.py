"""``outlast api``: serve the HTTP API with uvicorn. Wired into the CLI by ``register(app)``."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from outlast.errors import OutlastError


def _err() -> Console:
    from outlast.cli.main import make_console

    return make_console(stderr=True)  # created late: the terminal width is read now


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now (checked before any URL is printed)."""
    if port == 0:
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def serve(
    url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_keys: dict[str, str] | None = None,
    max_body: int = 1 << 20,
    log_level: str = "info",
    access_log: bool = True,
    max_header_bytes: int = 16 * 1024,
    head_timeout: float = 30.0,
    **options: Any,
) -> None:
    """Build the app (``options`` go to ``create_app``) and run it under uvicorn until SIGTERM.

    A request line plus headers over ``max_header_bytes`` is answered 431, and one not complete
    ``head_timeout`` seconds after its first byte 408 (see :mod:`outlast.api.protocol`)."""
    import gc

    import uvicorn

    from outlast.api import create_app
    from outlast.api.protocol import bounded_httptools
    from outlast.observe.logs import configure_logging

    configure_logging()  # uvicorn's loggers too (log_config=None): JSON lines unless a terminal
    application = create_app(url, api_keys=api_keys, max_body=max_body, **options)
    # Take everything imported so far out of the cyclic GC: with thousands of open streams, full
    # collections otherwise re-scan it all and pause every stream for 100+ ms.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        application, host=host, port=port, log_level=log_level, access_log=access_log,
        timeout_graceful_shutdown=5, loop="uvloop", http=bounded_httptools(max_header_bytes, head_timeout),
        log_config=None,
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add the ``api`` command to ``app``."""

    @app.command("api")
    def api(
        host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind.")] = 8000,
        redis: Annotated[
            str | None,
            typer.Option(
                "--redis", help="Redis URL (default: $OUTLAST_REDIS_URL, else this folder's outlast server)."
            ),
        ] = None,
        insecure: Annotated[
            bool, typer.Option(help="Allow a non-loopback address without API keys (open mode).")
        ] = False,
        keys_file: Annotated[
            Path | None,
            typer.Option(
                help="File of KEY:TENANT entries (default: $OUTLAST_API_KEYS[_FILE]).", dir_okay=False
            ),
        ] = None,
        max_body: Annotated[int, typer.Option(min=1, help="Largest request body, bytes.")] = 1 << 20,
        max_header_bytes: Annotated[
            int, typer.Option(min=256, help="Largest request line + headers, bytes (else 431).")
        ] = 16 * 1024,
        body_timeout: Annotated[
            float, typer.Option(min=0.1, help="Seconds a request body may stall (else 408).")
        ] = 30.0,
        max_connections: Annotated[
            int | None,
            typer.Option(
                min=2, help="Redis connections per process (default: $OUTLAST_API_MAX_CONNECTIONS or 256)."
            ),
        ] = None,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
        cors_origin: Annotated[
            list[str] | None,
            typer.Option(
                help="An origin whose browser pages may call the API (repeat; * for any; "
                "default: $OUTLAST_CORS_ORIGINS)."
            ),
        ] = None,
    ) -> None:
        """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs). Stateless: run any number."""
        from outlast.api.auth import keys_from_env, parse_api_keys
        from outlast.api.cors import check_origins, origins_from_env

        try:
            origins = check_origins(cors_origin) if cors_origin else origins_from_env()
            keys = parse_api_keys(keys_file.read_text()) if keys_file else keys_from_env()
        except OSError as exc:
            _err().print(f"[red]error:[/red] --keys-file {keys_file}: {exc.strerror}")
            raise typer.Exit(2) from None
        except OutlastError as exc:
            _err().print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        if keys is None and not is_loopback(host) and not insecure:
            _err().print(
                f"[red]error:[/red] refusing to serve on {host} without API keys: anyone who can reach it "
                "could start and read every run. Set OUTLAST_API_KEYS (KEY:TENANT,...) or --keys-file, "
                "bind to 127.0.0.1, or pass --insecure if something in front of it authenticates."
            )
            raise typer.Exit(2)
        from outlast.cli.discover import find_redis

        try:
            found = find_redis(redis)
        except OutlastError as exc:
            _err().print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        url = found.url
        if not port_free(host, port):
            _err().print(
                f"[red]error:[/red] port {port} on {host} is taken; stop what uses it or pass --port N"
            )
            raise typer.Exit(1)
        mode = "open mode (no API keys)" if keys is None else f"{len(keys)} API keys"
        where = f" ({found.source})" if found.source else ""
        _err().print(f"outlast api on http://{host}:{port} ({mode}), Redis {url.split('@')[-1]}{where}")
        try:
            serve(
                url, host=host, port=port, api_keys=keys, max_body=max_body, log_level=log_level,
                max_header_bytes=max_header_bytes, body_timeout=body_timeout, max_connections=max_connections,
                cors_origins=origins,
            )  # fmt: skip
        except OutlastError as exc:
            _err().print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
