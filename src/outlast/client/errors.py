"""Errors of the HTTP client."""

from __future__ import annotations

from typing import Any

from outlast.errors import OutlastError


class ClientError(OutlastError):
    """The API answered with an error, or could not be reached (``status`` 0).

    ``code`` is the API's stable error code (``run_not_found``, ``invalid_input``, …);
    ``details`` its details (for ``invalid_input``: one ``{loc, msg, type}`` per bad field).
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
