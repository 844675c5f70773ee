"""resultstore-dashboard: a web page on a resultstore backend.

Lists and counts the stored results (capability ``listing``), shows a task's state,
result and failure, follows a running task's progress by push, and forgets or
revokes. ``resultstore-dashboard --backend URL`` serves it; :func:`create_app` is
the ASGI application, to mount in an application of your own.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .app import create_app

__all__ = ["__version__", "create_app"]
