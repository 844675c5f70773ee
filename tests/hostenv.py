"""How a worker process (and any reader) opens the store a host test chose: the
environment ``tests.hosts.Store.env`` sets. Standard library only, so that the worker's
and the readers' start-up imports nothing of the test suite's."""

from __future__ import annotations

import json
import os
from typing import Any

REDIS_URL = "redis://127.0.0.1:6379/0"  # the broker's: the machine's Redis


def store_from_env() -> tuple[str, dict[str, Any]]:
    return os.environ["RS_URL"], json.loads(os.environ.get("RS_OPTIONS") or "{}")
