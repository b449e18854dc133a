"""Reading what a child process drew on a pseudo-terminal (the live view, log formatting)."""

from __future__ import annotations

import os
import select


def read_until_closed(fd: int, timeout: float = 60.0) -> bytes:
    """Everything written to the terminal whose primary side is ``fd`` until the child closes it
    (or nothing arrives for ``timeout`` seconds)."""
    drawn = b""
    while select.select([fd], [], [], timeout)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    return drawn
