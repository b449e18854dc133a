"""Run a Valkey and a :class:`~.stack.Stack` for the client's ``node --test`` suite, driven over stdin/stdout.

``python -m tests.clients.launcher`` (from the repository root) prints one JSON line
``{"api": URL, "token": KEY}`` once everything answers, then reads one JSON command per line and
answers each with one JSON line (``{"ok": true}`` or ``{"error": "..."}``):

* ``{"cmd": "kill_api"}``: SIGKILL the API process (a crash: no goodbye to any client);
* ``{"cmd": "restart_api"}``: start it again on the same port and wait until it answers;
* ``{"cmd": "open", "gate": NAME}``: open a gate of :mod:`.app`;
* ``{"cmd": "trim", "run_id": ID, "keep": N}``: trim a run's stream (readers behind it see a gap).

End of input stops everything.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from outlast.store.embedded import EmbeddedServer

from .stack import TOKEN, Stack


def handle(stack: Stack, command: dict[str, Any]) -> None:
    match command.get("cmd"):
        case "kill_api":
            stack.api.kill()
        case "restart_api":
            stack.restart_api()
        case "open":
            stack.open_gate(str(command["gate"]))
        case "trim":
            stack.trim(str(command["run_id"]), int(command["keep"]))
        case other:
            raise ValueError(f"unknown command {other!r}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="outlast-js-") as tmp, EmbeddedServer(Path(tmp)) as valkey:
        stack = Stack(valkey.url)
        try:
            print(json.dumps({"api": stack.base_url, "token": TOKEN}), flush=True)
            for line in sys.stdin:
                if not line.strip():
                    continue
                try:
                    handle(stack, json.loads(line))
                    reply: dict[str, Any] = {"ok": True}
                except Exception as exc:  # reported to the test, which fails with it
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(reply), flush=True)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
