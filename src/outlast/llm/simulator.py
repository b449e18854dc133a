"""An OpenAI- and Anthropic-compatible LLM simulator for tests, demos and benchmarks.

Drive it with the official ``openai`` SDK (``base_url=SimulatorServer().base_url``) or the
``anthropic`` SDK (``base_url=SimulatorServer().url``). It serves ``POST /v1/chat/completions``
(plain and ``stream: true``), ``POST /v1/messages`` (the Anthropic Messages API, plain and
streaming, see :mod:`.sim_anthropic`), ``GET /v1/models`` and admin endpoints
``GET|PATCH /admin/knobs``, ``GET /admin/stats[?window=S]``, ``GET /admin/requests`` (the last
request bodies, with their arrival time and status) and ``POST /admin/reset``.

Per request, in order: the API key check when ``api_keys`` is set (401; the key comes from
``Authorization: Bearer`` or ``x-api-key``), body validation (400) and model check (404) — none is
rate-limited nor counted as accepted; then the sliding-window RPM/TPM limiter (429 with
``Retry-After``); every request past it is *accepted* (its arrival is recorded for
``max_requests_in_any_60s_window``) and may still hit an outage window (503), a throttle window
(429 with the window's ``Retry-After``, 1 s by default: a provider-side burst, counted apart as
``throttled_requests``) or the seeded error dice (500/503); the rest is answered with
deterministic text: prose about the prompt, or JSON shaped like the schema the call asks for,
with facts read off the prompt (see :mod:`.sim_text`).
``POST /admin/reset`` zeroes the stats, empties the rate-limit window and re-seeds the dice.

The app is built in :mod:`.sim_app`; this module serves it (:class:`SimulatorServer` on a
background thread, :func:`serve` in the foreground) and is the command line:
``python -m outlast.llm.simulator --port 8900 --rpm-limit 60``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from pydantic import ValidationError

from outlast.llm.sim_app import SimState, build, create_app
from outlast.llm.sim_knobs import SimKnobs

__all__ = ["SimKnobs", "SimState", "SimulatorServer", "create_app", "main", "serve"]


def _knobs(knobs: SimKnobs | None, overrides: dict[str, Any]) -> SimKnobs:
    knobs = knobs if knobs is not None else SimKnobs()
    if overrides:
        knobs.apply(overrides)
    return knobs


def serve(
    host: str = "127.0.0.1",
    port: int = 8900,
    knobs: SimKnobs | None = None,
    *,
    log_level: str = "info",
    **knob_overrides: Any,
) -> None:
    """Run the simulator in the foreground; any :class:`SimKnobs` field may be passed by name."""
    app = create_app(_knobs(knobs, knob_overrides))
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws="none", lifespan="on")


class SimulatorServer:
    """A simulator on a free loopback port, served by uvicorn in a background thread."""

    def __init__(
        self, knobs: SimKnobs | None = None, *, host: str = "127.0.0.1", port: int = 0, **knob_overrides: Any
    ) -> None:
        self.app, self._state = build(_knobs(knobs, knob_overrides))
        self.host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def knobs(self) -> SimKnobs:
        return self._state.knobs

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        return self._state.stats.snapshot()

    def max_requests_in(self, seconds: float) -> int:
        """The most accepted requests that arrived within any window of ``seconds``."""
        return self._state.stats.max_in_window(seconds)

    def requests(self) -> list[dict[str, Any]]:
        """The last requests received (``{"api": "openai"|"anthropic", "body", "at", "status"}``);
        how many are kept is the ``request_log`` knob (default 100)."""
        return self._state.stats.recent()

    def reset(self) -> None:
        """Zero the stats and empty the rate-limit window (same as ``POST /admin/reset``)."""
        loop = self._state.loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            self._state.reset()
            return

        async def reset() -> None:
            self._state.reset()

        asyncio.run_coroutine_threadsafe(reset(), loop).result(timeout=10)

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: without it, h11's separate header and body writes meet the
        # client's delayed ACK (Nagle) and every response takes ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_config=None, log_level="warning", access_log=False,
            http="h11", ws="none", lifespan="on", loop="asyncio", timeout_graceful_shutdown=5,
        )  # fmt: skip
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"llm-sim:{self._port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:  # uvicorn's only readiness signal: poll it
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"LLM simulator failed to start on {self.url}")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._state.release_stalls()
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m outlast.llm.simulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-second", type=float, default=0.0)
    parser.add_argument("--rpm-limit", type=int, default=0)
    parser.add_argument("--tpm-limit", type=int, default=0)
    parser.add_argument("--rate-window-s", type=float, default=60.0, help="RPM/TPM sliding window")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--outage", action="append", default=[], metavar="START:END", help="epoch seconds")
    parser.add_argument("--throttle", action="append", default=[], metavar="START:END", help="429 window")
    parser.add_argument("--stall-after-tokens", type=int, default=0)
    parser.add_argument("--stall-requests", type=int, default=0, help="stall only the first N; 0 = all")
    parser.add_argument("--api-key", action="append", default=[], help="accepted key (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--request-log", type=int, default=100, help="request bodies /admin/requests keeps")
    parser.add_argument("--model", action="append", default=[], help="served model (repeatable)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        outages, throttles = (
            [dict(zip(("start", "end"), map(float, o.split(":")), strict=True)) for o in spans]
            for spans in (args.outage, args.throttle)
        )
        values: dict[str, Any] = {
            "ttft_ms": args.ttft_ms,
            "tokens_per_second": args.tokens_per_second,
            "rpm_limit": args.rpm_limit,
            "tpm_limit": args.tpm_limit,
            "rate_window_s": args.rate_window_s,
            "error_rate": args.error_rate,
            "outages": outages,
            "throttles": throttles,
            "stall_after_tokens": args.stall_after_tokens,
            "stall_requests": args.stall_requests,
            "api_keys": args.api_key,
            "seed": args.seed,
            "request_log": args.request_log,
        }
        if args.model:
            values["models"] = args.model
        knobs = SimKnobs.model_validate(values)
    except (ValueError, ValidationError) as exc:
        parser.error(str(exc))
    serve(args.host, args.port, knobs, log_level=args.log_level)


if __name__ == "__main__":
    main()
