from __future__ import annotations

from ..hosts import store

__all__ = ["store"]
