"""Which database to use, and how to show its DSN without the password.

Precedence: ``--database-url`` > ``COORDINATOR_DATABASE_URL`` > ``DATABASE_URL`` > the
embedded server. Only ``postgresql://`` / ``postgres://`` URLs are accepted (asyncpg's
format); a key=value libpq string is refused with a clear error rather than half-parsed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from coordinator.errors import DatabaseError
from coordinator.redact import MASK

DsnSource = Literal["flag", "COORDINATOR_DATABASE_URL", "DATABASE_URL", "embedded"]
ENV_VARS: tuple[Literal["COORDINATOR_DATABASE_URL"], Literal["DATABASE_URL"]] = (
    "COORDINATOR_DATABASE_URL",
    "DATABASE_URL",
)
_SCHEMES = ("postgresql", "postgres")
_SECRET_PARAMS = {"password", "sslpassword"}
_KEYWORD_PASSWORD = re.compile(r"\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.I)


@dataclass(frozen=True, slots=True)
class ResolvedDsn:
    dsn: str
    source: DsnSource

    @property
    def masked(self) -> str:
        return mask_dsn(self.dsn)


def resolve_dsn(
    explicit: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    state_dir: Path | None = None,
) -> ResolvedDsn:
    """Pick the DSN by precedence; start (or reuse) the embedded server as the last resort.

    Empty values count as unset. Starting the embedded server blocks for up to a few
    seconds the first time; call this from a thread when an event loop is running.
    """
    env = os.environ if environ is None else environ
    if explicit:
        return ResolvedDsn(validate_dsn(explicit, "--database-url"), "flag")
    for name in ENV_VARS:
        value = env.get(name, "").strip()
        if value:
            return ResolvedDsn(validate_dsn(value, name), name)
    from coordinator.db.embedded import ensure_embedded_server

    return ResolvedDsn(ensure_embedded_server(state_dir), "embedded")


def validate_dsn(dsn: str, origin: str) -> str:
    """Return ``dsn`` stripped if it is a postgres URL; raise DatabaseError otherwise."""
    dsn = dsn.strip()
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if scheme not in _SCHEMES:
        raise DatabaseError(
            f"{origin}: expected a postgresql://user:password@host:port/database URL, "
            f"got {mask_dsn(dsn)!r}",
            source=origin,
        )
    return dsn


def mask_dsn(dsn: str) -> str:
    """``dsn`` with every password replaced by ``***`` (userinfo, query and key=value forms)."""
    if "://" not in dsn:
        return _KEYWORD_PASSWORD.sub(lambda m: f"{m.group(1)}={MASK}", dsn)
    parts = urlsplit(dsn)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if at and colon and password:
        netloc = f"{user}:{MASK}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
            masked = [(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs]
            query = urlencode(masked, safe="/*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, ""))


def database_name(dsn: str) -> str | None:
    """The database a URL names, or None when it leaves the default to the driver."""
    path = urlsplit(dsn).path.lstrip("/")
    return path or None
