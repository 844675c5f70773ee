"""Celery's result backend on resultstore: ``result_backend = "resultstore+<url>"``.

Celery finds :class:`ResultStoreBackend` through the entry point ``resultstore`` in
the group ``celery.result_backends`` and hands it the URL after the first ``+``, so
any installed resultstore plugin serves a Celery app: ``resultstore+redis://...``,
``resultstore+db+postgresql://...``, ``resultstore+file:///dir``.
"""

from __future__ import annotations

from ._backend import ResultStoreBackend
from ._settings import close_stores

__version__ = "0.1.0"

__all__ = ["ResultStoreBackend", "close_stores"]
