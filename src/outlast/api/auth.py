"""API keys and tenants.

``OUTLAST_API_KEYS="key1:tenantA,key2:tenantB"`` (or a file named by ``OUTLAST_API_KEYS_FILE``
with the same entries, separated by commas or new lines, ``#`` comments allowed) maps keys to
tenants. With keys, every ``/v1`` call needs ``Authorization: Bearer KEY``; the events endpoint
also accepts ``?token=KEY`` because a browser's EventSource cannot set headers. Without keys the
API is in open mode: no auth, no tenancy.

``OUTLAST_ADMIN_TENANTS="ops,acme"`` names the tenants whose keys may change the fleet
(``POST /v1/deploy/promote`` and ``/rollback``); other keys get 403. In open mode anyone may.

Keys are compared in constant time against every configured key, and are never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote_plus

from outlast.api.errors import ApiError
from outlast.errors import ConfigError

ENV_KEYS = "OUTLAST_API_KEYS"
ENV_KEYS_FILE = "OUTLAST_API_KEYS_FILE"
ENV_METRICS_TOKEN = "OUTLAST_METRICS_TOKEN"
ENV_ADMINS = "OUTLAST_ADMIN_TENANTS"
_TENANT = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def parse_api_keys(text: str) -> dict[str, str]:
    """``key:tenant`` entries separated by commas or new lines → {key: tenant}."""
    keys: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for raw in line.split(","):
            entry = raw.strip()
            if not entry:
                continue
            key, sep, tenant = entry.rpartition(":")
            if not sep or not key:
                raise ConfigError("API keys: each entry must be KEY:TENANT (e.g. 's3cret:acme')")
            if not _TENANT.match(tenant):
                raise ConfigError(f"API keys: tenant {tenant!r} must be 1-128 of [A-Za-z0-9_.:-]")
            if key in keys:
                raise ConfigError(f"API keys: a key is listed twice (tenants {keys[key]!r}, {tenant!r})")
            keys[key] = tenant
    return keys


def keys_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The configured keys, or None (open mode) when neither variable is set."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_KEYS, "")
    path = env.get(ENV_KEYS_FILE, "")
    if path:
        try:
            text += "\n" + Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{ENV_KEYS_FILE}={path}: cannot read it: {exc.strerror}") from None
    if not text.strip():
        return None
    return parse_api_keys(text)


def admins_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The tenants named by ``OUTLAST_ADMIN_TENANTS`` (comma-separated; empty: none)."""
    env = os.environ if environ is None else environ
    names = frozenset(t.strip() for t in env.get(ENV_ADMINS, "").split(",") if t.strip())
    bad = sorted(t for t in names if not _TENANT.match(t))
    if bad:
        raise ConfigError(f"{ENV_ADMINS}: tenant {bad[0]!r} must be 1-128 of [A-Za-z0-9_.:-]")
    return names


class Authenticator:
    """Maps a presented key to its tenant. ``tenant_for`` returns None in open mode.

    ``metrics_token`` (default ``$OUTLAST_METRICS_TOKEN``): the bearer token ``/metrics`` needs.
    Without one, ``/metrics`` is open in open mode and needs any API key when keys are set (its
    counts span every tenant, so give a scraper its own token where tenants are strangers).
    ``admins``: tenants whose keys may promote and roll back versions (open mode: everyone).
    """

    def __init__(
        self,
        keys: Mapping[str, str] | None,
        metrics_token: str | None = None,
        admins: frozenset[str] = frozenset(),
    ) -> None:
        self._keys = [(key.encode(), tenant) for key, tenant in (keys or {}).items()]
        if keys is not None and not self._keys:
            raise ConfigError("API keys: an empty key set would lock every client out; omit it for open mode")
        self.open = not self._keys
        self.admins = admins
        token = os.environ.get(ENV_METRICS_TOKEN, "") if metrics_token is None else metrics_token
        self._metrics_token = token.strip().encode() or None

    def check_metrics(self, authorization: str | None) -> None:
        """Raise 401 unless ``authorization`` may read ``/metrics`` (see the class docstring)."""
        if self._metrics_token is None:
            self.tenant_for(authorization)
            return
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            message = "/metrics needs 'Authorization: Bearer <metrics token>'"
            raise _unauthorized("missing_metrics_token", message)
        if not hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), self._metrics_token):
            raise _unauthorized("invalid_metrics_token", f"not the metrics token (${ENV_METRICS_TOKEN})")

    def can_deploy(self, tenant: str | None) -> bool:
        """Whether the caller (``tenant_for``'s answer) may promote and roll back."""
        return self.open or (tenant is not None and tenant in self.admins)

    def tenant_for(self, authorization: str | None, token: str | None = None) -> str | None:
        if self.open:
            return None
        presented: str | None = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise _unauthorized("invalid_api_key", "the Authorization header must be 'Bearer <key>'")
            presented = value.strip()
        elif token:
            presented = token
        if presented is None:
            raise _unauthorized("missing_api_key", "this API needs a key: send 'Authorization: Bearer <key>'")
        candidate = presented.encode("utf-8", "surrogateescape")
        found: str | None = None
        for key, tenant in self._keys:  # no early exit: the time taken does not tell which key matched
            if hmac.compare_digest(key, candidate):
                found = tenant
        if found is None:
            raise _unauthorized("invalid_api_key", "the API key is not valid")
        return found


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


def redact_query(text: str) -> str:
    """``text`` (a path or log word) with every query value whose *decoded* name is ``token``
    replaced by ``[redacted]``: ``?%74oken=KEY`` authenticates just like ``?token=KEY``."""
    path, sep, query = text.partition("?")
    if not sep:
        return text
    parts = query.split("&")
    for i, part in enumerate(parts):
        name = part.partition("=")[0]
        if unquote_plus(name).strip().lower() == "token":
            parts[i] = f"{name}=[redacted]"
    return f"{path}?{'&'.join(parts)}"


class RedactTokens(logging.Filter):
    """Hides ``token`` query values in uvicorn's access log lines (EventSource keys)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_query(arg) if isinstance(arg, str) and "?" in arg else arg for arg in record.args
            )
        elif isinstance(record.msg, str) and "?" in record.msg:
            record.msg = " ".join(redact_query(word) for word in record.msg.split(" "))
        return True


def install_log_redaction() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
