"""A pytest plugin of the harness (``-p bridge_as_redis``): Celery's ``redis`` backend
name selects the bridge, so that ``TEST_BACKEND=redis://...`` runs on resultstore.

Celery's integration suite runs about a hundred of its tests only when the backend
URL starts with ``redis`` (they read the result Redis directly: lists the tasks push
to, key counts). ``resultstore+redis://`` does not, so they never ran through the
bridge. With the ``redis`` name pointing at the bridge, the URL is a plain
``redis://`` one, the bridge writes Celery's keys to it, and those tests check the
bridge's wire format from the outside. Celery looks its backend up in these aliases
at each app's first use of ``app.backend``, in the suite's process and in the worker
it starts there.
"""

from celery.app import backends

backends.BACKEND_ALIASES["redis"] = "celery_resultstore:ResultStoreBackend"


def pytest_report_header() -> str:
    """Proof in the run's header that ``redis://`` is the bridge (a run that silently
    fell back to Celery's own backend would pass for the wrong reason)."""
    cls, _ = backends.by_url("redis://127.0.0.1:6379/0")
    name = f"{cls.__module__}.{cls.__qualname__}"
    if not name.startswith("celery_resultstore."):
        raise RuntimeError(f"redis:// selects {name}, not the bridge")
    return f"result backend for redis:// URLs: {name} (bridge_as_redis)"
