"""The public surface of ``resultstore``: pinned, so that changing it is a decision."""

from __future__ import annotations

import copy
import importlib.metadata
import pickle

import pytest

import resultstore

EXPECTED_ALL = [
    "ALL_STATES",
    "EXCEPTION_STATES",
    "FAILURE",
    "PENDING",
    "PROPAGATE_STATES",
    "READY_STATES",
    "RECEIVED",
    "RETRY",
    "REVOKED",
    "STARTED",
    "SUCCESS",
    "UNREADY_STATES",
    "URL",
    "AmbiguousBackend",
    "AsyncResult",
    "Backend",
    "BackendConfig",
    "BackendLoadError",
    "BackendNotFound",
    "BackendUnavailable",
    "Capability",
    "Codec",
    "CountQuery",
    "DecodeError",
    "EagerResult",
    "EncodeError",
    "Executor",
    "GroupMeta",
    "GroupResult",
    "InvalidURL",
    "KeyValueStore",
    "ListQuery",
    "NotifyChannel",
    "OnChange",
    "PerLoop",
    "PluginValidationError",
    "RemoteError",
    "RemoteTraceback",
    "ResultPage",
    "ResultSet",
    "ResultStoreError",
    "RetryPolicy",
    "Signature",
    "Task",
    "TaskInfo",
    "TaskMeta",
    "TaskRevokedError",
    "TaskRun",
    "TimeoutError",
    "UnsupportedOperation",
    "Watch",
    "WorkerLostError",
    "allow_join_result",
    "assert_will_not_block",
    "current_run",
    "current_task_id",
    "hookimpl",
    "hookspec",
    "installed_schemes",
    "mask_password",
    "register_backend",
    "resolve",
    "result_from_tuple",
    "running_task",
    "time_left",
    "unregister_backend",
    "validate_task_id",
]

PUBLIC_CLASSES = sorted(
    name for name in EXPECTED_ALL if isinstance(getattr(resultstore, name), type)
)

ERRORS = [
    "AmbiguousBackend",
    "BackendLoadError",
    "BackendNotFound",
    "BackendUnavailable",
    "DecodeError",
    "EncodeError",
    "InvalidURL",
    "PluginValidationError",
    "ResultStoreError",
    "TaskRevokedError",
    "TimeoutError",
    "UnsupportedOperation",
    "WorkerLostError",
]


def test_all_is_pinned() -> None:
    assert resultstore.__all__ == EXPECTED_ALL


def _isort_key(name: str) -> tuple[int, str]:
    # Ruff's RUF022 order: CONSTANTS, then Classes, then functions, each sorted.
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted_and_unique() -> None:
    assert len(set(resultstore.__all__)) == len(resultstore.__all__)
    assert resultstore.__all__ == sorted(resultstore.__all__, key=_isort_key)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from resultstore import *", namespace)
    del namespace["__builtins__"]
    assert sorted(namespace) == sorted(EXPECTED_ALL)


def test_public_classes() -> None:
    assert PUBLIC_CLASSES == [
        "AmbiguousBackend",
        "AsyncResult",
        "Backend",
        "BackendConfig",
        "BackendLoadError",
        "BackendNotFound",
        "BackendUnavailable",
        "Capability",
        "Codec",
        "CountQuery",
        "DecodeError",
        "EagerResult",
        "EncodeError",
        "Executor",
        "GroupMeta",
        "GroupResult",
        "InvalidURL",
        "KeyValueStore",
        "ListQuery",
        "NotifyChannel",
        "PerLoop",
        "PluginValidationError",
        "RemoteError",
        "RemoteTraceback",
        "ResultPage",
        "ResultSet",
        "ResultStoreError",
        "RetryPolicy",
        "Signature",
        "Task",
        "TaskInfo",
        "TaskMeta",
        "TaskRevokedError",
        "TaskRun",
        "TimeoutError",
        "URL",
        "UnsupportedOperation",
        "Watch",
        "WorkerLostError",
    ]


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_classes_live_in_resultstore(name: str) -> None:
    cls = getattr(resultstore, name)
    assert cls.__module__ == "resultstore"
    assert cls.__qualname__ == name
    assert f"{cls.__module__}.{cls.__qualname__}" == f"resultstore.{name}"


def test_version_matches_the_distribution() -> None:
    assert resultstore.__version__ == "0.1.0"
    assert importlib.metadata.version("resultstore") == resultstore.__version__


def test_errors_share_one_base() -> None:
    for name in ERRORS:
        assert issubclass(getattr(resultstore, name), resultstore.ResultStoreError), name
    assert issubclass(resultstore.TimeoutError, TimeoutError)


@pytest.mark.parametrize("name", ERRORS)
def test_errors_pickle_by_their_public_name(name: str) -> None:
    cls = getattr(resultstore, name)
    exc = cls("something went wrong")
    data = pickle.dumps(exc)
    assert b"resultstore" in data
    assert b"resultstore._" not in data
    again = pickle.loads(data)
    assert type(again) is cls
    assert again.args == ("something went wrong",)
    assert str(again) == "something went wrong"


def test_remote_traceback_pickles() -> None:
    exc = resultstore.RemoteTraceback("Traceback (most recent call last):\n  boom\n")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is resultstore.RemoteTraceback
    assert again.traceback == "Traceback (most recent call last):\n  boom\n"


def test_remote_error_pickles_and_copies() -> None:
    exc = resultstore.RemoteError("ValueError", "myapp.errors", ("bad input",), "Traceback ...")
    for again in (pickle.loads(pickle.dumps(exc)), copy.copy(exc)):
        assert type(again) is resultstore.RemoteError
        assert (again.exc_type, again.exc_module, again.args, again.traceback) == (
            "ValueError",
            "myapp.errors",
            ("bad input",),
            "Traceback ...",
        )
        assert str(again) == "myapp.errors.ValueError: bad input"


def test_listing_module_for_plugin_authors_is_pinned() -> None:
    import resultstore.listing

    assert resultstore.listing.__all__ == [
        "MAX_BUCKETS",
        "MAX_LIMIT",
        "CountQuery",
        "Filters",
        "ListQuery",
        "Position",
        "ResultPage",
        "count_of",
        "page_of",
    ]
    assert resultstore.listing.ListQuery is resultstore.ListQuery
