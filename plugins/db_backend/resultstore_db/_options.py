"""The plugin's settings (``database_*``, in Celery's style), checked once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resultstore import RetryPolicy

# A connect (the TCP connect and the server's handshake) and each exchange with
# the server afterwards: what the plugin waits at most when the call has no
# deadline of its own (a wait's timeout bounds it further). 120 s to read is
# Celery's redis_socket_timeout: a long statement on a busy server is no failure.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 120.0

KNOWN = {
    "database_engine_options",
    "database_table_names",
    "database_table_schemas",
    "database_create_tables_at_setup",
    "database_retry_policy",
    "database_connect_timeout",
    "database_read_timeout",
    "database_short_lived_sessions",  # Celery's; engines here are pooled either way
}


@dataclass(frozen=True)
class Settings:
    engine_options: dict[str, Any]
    table_names: dict[str, str]
    table_schemas: dict[str, str]
    create_tables: bool
    retry: RetryPolicy
    connect_timeout: float
    read_timeout: float


def parse(options: Mapping[str, Any]) -> Settings:
    """The settings, checked (the core has refused names outside KNOWN already)."""
    create = options.get("database_create_tables_at_setup", True)
    if not isinstance(create, bool):
        raise TypeError(f"database_create_tables_at_setup must be True or False, got {create!r}")
    return Settings(
        engine_options=_mapping(options, "database_engine_options"),
        table_names=_mapping(options, "database_table_names"),
        table_schemas=_mapping(options, "database_table_schemas"),
        create_tables=create,
        retry=RetryPolicy.from_option(
            options.get("database_retry_policy"), "database_retry_policy"
        ),
        connect_timeout=_seconds(options, "database_connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        read_timeout=_seconds(options, "database_read_timeout", DEFAULT_READ_TIMEOUT),
    )


def _mapping(options: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = options.get(name) or {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, got {value!r}")
    return dict(value)


def _seconds(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)
