"""The provider side of resultstore.Backend on memory://.

Settings (Celery's names and defaults), the task lifecycle, the "a ready state is
never replaced" rule, failures on the wire and back, serialization, task id
validation, extended metadata, expiry on a fake clock, revocation, groups, and
the exact bytes Celery writes and reads.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import sys
import traceback as tb_module
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kombu import serialization as kombu_serialization

import resultstore
from resultstore import (
    FAILURE,
    PENDING,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    AsyncResult,
    Backend,
    Capability,
    DecodeError,
    EncodeError,
    GroupResult,
    RemoteError,
    ResultStoreError,
    TaskInfo,
    TaskMeta,
    TaskRevokedError,
)
from resultstore.testing import FakeClock

from ..doubles import fail_with

KNOWN_SETTINGS = (
    "result_backend, result_expires, result_serializer, result_accept_content, "
    "result_extended, result_exception_allow, result_backend_transport_options"
)
PICKLE_REFUSED = "refused: it is pickle data and 'pickle' is not in result_accept_content"


class CustomError(Exception):
    """An application exception that consumers have not allowed to be rebuilt."""


class Outer:
    class InnerError(Exception):
        """A nested class: stored by its __qualname__, as Celery does."""


UNPICKLED: list[str] = []


def _record_unpickling() -> None:
    UNPICKLED.append("unpickled")


class Booby:
    """Unpickling this object would run ``_record_unpickling``."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _record_unpickling, ()


def utc_between(value: datetime | None, before: datetime, after: datetime) -> datetime:
    """Assert ``value`` is a tz-aware UTC datetime in [before, after]; return it."""
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    assert value.tzinfo == timezone.utc
    assert before <= value <= after
    return value


def now() -> datetime:
    return datetime.now(timezone.utc)


def wire(backend: Backend, task_id: str) -> bytes | None:
    value: bytes | None = backend.plugin.kv_get(f"celery-task-meta-{task_id}")  # type: ignore[attr-defined]
    return value


def put_raw(backend: Backend, task_id: str, data: bytes) -> None:
    backend.plugin.kv_set(f"celery-task-meta-{task_id}", data, None)  # type: ignore[attr-defined]


def celery_bytes(record: dict[str, Any]) -> bytes:
    """Bytes the way Celery's key-value backends write them: json.dumps, default separators."""
    return json.dumps(record).encode()


# --- defaults and settings ---------------------------------------------------------


class TestDefaults:
    def test_celery_defaults(self, backend: Backend, store_url: str) -> None:
        assert backend.expires == 86400.0
        assert type(backend.expires) is float
        assert backend.codec.serializer == "json"
        assert backend.codec.content_type == "application/json"
        assert backend.codec.content_encoding == "utf-8"
        assert backend.codec.accept == frozenset({"application/json"})
        assert backend.config.extended is False
        assert backend.config.expires == 86400.0
        assert backend.config.options == {}
        assert backend.config.inner_url is None
        assert backend.url.raw == store_url

    def test_memory_capabilities_and_repr(self, backend: Backend, store_url: str) -> None:
        assert backend.capabilities == frozenset(
            {
                Capability.TTL,
                Capability.PUSH,
                Capability.GET_MANY,
                Capability.GROUPS,
                Capability.CLEANUP,
                Capability.REVOKE,
                Capability.ASYNC,
                Capability.COUNTER,
                Capability.LISTING,
            }
        )
        assert repr(backend) == f"<Backend '{store_url}' plugin=resultstore_memory.MemoryBackend>"

    def test_close_is_idempotent(self, store_url: str) -> None:
        backend = Backend(store_url)
        backend.close()
        backend.close()


class TestFromConfig:
    def test_celery_setting_names(self, store_url: str) -> None:
        config = {
            "result_backend": store_url,
            "result_expires": 60,
            "result_serializer": "json",
            "result_accept_content": ["json"],
            "result_extended": True,
        }
        with Backend.from_config(config) as backend:
            assert backend.url.raw == store_url
            assert backend.expires == 60.0
            assert backend.codec.serializer == "json"
            assert backend.codec.accept == frozenset({"application/json"})
            assert backend.config.extended is True
            assert backend.config.options == {}

    @pytest.mark.parametrize(
        ("setting", "seconds"),
        [
            (60, 60.0),
            (1.5, 1.5),
            (timedelta(hours=1), 3600.0),
            (timedelta(milliseconds=250), 0.25),
            (None, None),
        ],
        ids=["int", "float", "timedelta", "timedelta-ms", "none"],
    )
    def test_result_expires(self, store_url: str, setting: Any, seconds: float | None) -> None:
        config = {"result_backend": store_url, "result_expires": setting}
        with Backend.from_config(config) as backend:
            assert backend.expires == seconds
            assert backend.config.expires == seconds

    def test_pickle_opt_in(self, store_url: str) -> None:
        config = {
            "result_backend": store_url,
            "result_serializer": "pickle",
            "result_accept_content": ["pickle", "json"],
        }
        with Backend.from_config(config) as backend:
            assert backend.codec.serializer == "pickle"
            assert backend.codec.content_type == "application/x-python-serialize"
            assert backend.codec.accept == frozenset(
                {"application/x-python-serialize", "application/json"}
            )

    def test_exception_allow_setting(self, store_url: str) -> None:
        config = {"result_backend": store_url, "result_exception_allow": [CustomError]}
        with Backend.from_config(config) as backend:
            backend.mark_as_failure("t", CustomError("x"))
            error = backend.get_result("t")
        assert type(error) is CustomError
        assert error.args == ("x",)

    @pytest.mark.parametrize("key", ["result_expire", "result_persistent", "result_"])
    def test_unknown_result_setting(self, store_url: str, key: str) -> None:
        with pytest.raises(ValueError, match=r"^unknown setting") as raised:
            Backend.from_config({"result_backend": store_url, key: 1})
        assert type(raised.value) is ValueError
        assert str(raised.value) == f"unknown setting {key!r}; known: {KNOWN_SETTINGS}"

    def test_other_keys_are_plugin_options(self, store_url: str) -> None:
        clock = FakeClock(1000.0)
        with Backend.from_config({"result_backend": store_url, "clock": clock}) as backend:
            assert backend.config.options == {"clock": clock}
            assert backend.plugin.clock is clock  # type: ignore[attr-defined]

    def test_transport_options_are_plugin_options(self, store_url: str) -> None:
        # A result_* setting, but the plugin's (Celery's Redis backend reads it):
        # handed over under its own name, next to the other plugin options.
        transport = {"global_keyprefix": "app:"}
        config = {
            "result_backend": store_url,
            "result_backend_transport_options": transport,
            "clock": FakeClock(),
        }
        with pytest.raises(ValueError, match=r"^memory://") as raised:
            Backend.from_config(config)
        assert str(raised.value) == (
            f"{store_url}: plugin resultstore_memory.MemoryBackend does not take option "
            "'result_backend_transport_options' (it takes: clock)"
        )

    def test_memory_rejects_unknown_option(self, store_url: str) -> None:
        with pytest.raises(ValueError, match=r"^memory://") as raised:
            Backend.from_config({"result_backend": store_url, "max_connections": 5})
        assert str(raised.value) == (
            f"{store_url}: plugin resultstore_memory.MemoryBackend does not take option "
            "'max_connections' (it takes: clock)"
        )

    def test_memory_lists_every_unknown_option_sorted(self, store_url: str) -> None:
        with pytest.raises(ValueError, match=r"^memory://") as raised:
            Backend(store_url, options={"zeta": 1, "alpha": 2, "clock": FakeClock()})
        assert str(raised.value) == (
            f"{store_url}: plugin resultstore_memory.MemoryBackend does not take options "
            "'alpha', 'zeta' (it takes: clock)"
        )

    def test_a_misspelt_option_gets_a_suggestion(self, store_url: str) -> None:
        with pytest.raises(ValueError, match=r"^memory://") as raised:
            Backend(store_url, options={"clocks": FakeClock()})
        assert str(raised.value) == (
            f"{store_url}: plugin resultstore_memory.MemoryBackend does not take option "
            "'clocks'; did you mean 'clock'? (it takes: clock)"
        )

    def test_keyword_arguments_are_passed_through(self, store_url: str) -> None:
        with Backend.from_config({"result_backend": store_url}, extended=True) as backend:
            assert backend.config.extended is True


class TestBadSettings:
    @pytest.mark.parametrize(
        ("expires", "exc_type", "message"),
        [
            (0, ValueError, "result_expires must be positive (or None for no expiry), got 0"),
            (-1, ValueError, "result_expires must be positive (or None for no expiry), got -1"),
            (
                timedelta(0),
                ValueError,
                "result_expires must be positive (or None for no expiry), got 0.0",
            ),
            ("x", TypeError, "result_expires must be seconds, a timedelta or None, got 'x'"),
            (True, TypeError, "result_expires must be seconds, a timedelta or None, got True"),
        ],
        ids=["zero", "negative", "zero-timedelta", "str", "bool"],
    )
    def test_bad_expires(
        self, store_url: str, expires: Any, exc_type: type[Exception], message: str
    ) -> None:
        with pytest.raises(exc_type) as raised:
            Backend(store_url, expires=expires)
        assert type(raised.value) is exc_type
        assert str(raised.value) == message

    def test_unknown_serializer(self, store_url: str) -> None:
        names = sorted(kombu_serialization.registry.name_to_type)
        assert "json" in names
        with pytest.raises(ValueError, match=r"^result_serializer") as raised:
            Backend(store_url, serializer="nope")
        assert str(raised.value) == (
            f"result_serializer 'nope' is not registered with kombu; choose one of {names}"
        )

    def test_accept_content_as_str(self, store_url: str) -> None:
        with pytest.raises(TypeError) as raised:
            Backend(store_url, accept_content="json")
        assert str(raised.value) == "result_accept_content must be a list of names, not a str"

    def test_accept_content_unknown_name(self, store_url: str) -> None:
        with pytest.raises(ValueError, match=r"^result_accept_content") as raised:
            Backend(store_url, accept_content=["json", "nope"])
        assert str(raised.value) == "result_accept_content: No encoder/decoder installed for nope"

    def test_pickle_serializer_without_pickle_in_accept(self, store_url: str) -> None:
        with pytest.raises(ValueError, match=r"^result_serializer") as raised:
            Backend(store_url, serializer="pickle")
        assert str(raised.value) == (
            "result_serializer 'pickle' is not in result_accept_content ['json']: "
            "results stored with it could not be read back"
        )

    def test_extended_must_be_bool(self, store_url: str) -> None:
        with pytest.raises(TypeError) as raised:
            Backend(store_url, extended="yes")  # type: ignore[arg-type]
        assert str(raised.value) == "result_extended must be a bool, got 'yes'"

    def test_options_must_be_a_mapping(self, store_url: str) -> None:
        with pytest.raises(TypeError) as raised:
            Backend(store_url, options=[("clock", 1)])  # type: ignore[arg-type]
        assert str(raised.value) == "options must be a mapping, got list"

    @pytest.mark.parametrize(
        ("allowed", "shown"),
        [(ValueError("x"), "ValueError('x')"), (int, "<class 'int'>")],
        ids=["instance", "not-an-exception"],
    )
    def test_exception_allow_takes_classes(self, store_url: str, allowed: Any, shown: str) -> None:
        with pytest.raises(TypeError) as raised:
            Backend(store_url, exception_allow=[allowed])
        assert str(raised.value) == f"result_exception_allow takes exception classes, got {shown}"


# --- the lifecycle ---------------------------------------------------------------


class TestLifecycle:
    def test_mark_as_started(self, backend: Backend) -> None:
        assert backend.mark_as_started("t") is True
        assert backend.get_task_meta("t") == TaskMeta("t", STARTED, result={})
        assert backend.mark_as_started("t", {"pid": 7, "hostname": "w1"}) is True
        assert backend.get_task_meta("t") == TaskMeta(
            "t", STARTED, result={"pid": 7, "hostname": "w1"}
        )
        assert backend.get_state("t") == STARTED
        assert backend.get_status("t") == STARTED
        assert backend.get_result("t") == {"pid": 7, "hostname": "w1"}
        assert backend.get_traceback("t") is None

    def test_mark_as_done(self, backend: Backend) -> None:
        before = now()
        assert backend.mark_as_done("t", 42) is True
        after = now()
        meta = backend.get_task_meta("t")
        date_done = utc_between(meta.date_done, before, after)
        assert meta == TaskMeta("t", SUCCESS, result=42, date_done=date_done)
        assert backend.get_result("t") == 42

    def test_mark_as_failure(self, backend: Backend) -> None:
        exc = fail_with(ValueError("bad", 3))
        before = now()
        assert backend.mark_as_failure("t", exc) is True
        after = now()
        meta = backend.get_task_meta("t")
        date_done = utc_between(meta.date_done, before, after)
        assert meta == TaskMeta(
            "t",
            FAILURE,
            result={"exc_type": "ValueError", "exc_message": ["bad", 3], "exc_module": "builtins"},
            traceback="".join(tb_module.format_exception(exc)),
            date_done=date_done,
        )

    def test_mark_as_retry(self, backend: Backend) -> None:
        exc = fail_with(KeyError("again"))
        assert backend.mark_as_retry("t", exc) is True
        assert backend.get_task_meta("t") == TaskMeta(
            "t",
            RETRY,
            result={"exc_type": "KeyError", "exc_message": ["again"], "exc_module": "builtins"},
            traceback="".join(tb_module.format_exception(exc)),
        )
        error = backend.get_result("t")
        assert type(error) is KeyError
        assert error.args == ("again",)

    @pytest.mark.parametrize("reason", [None, "expired"], ids=["default", "given"])
    def test_mark_as_revoked(self, backend: Backend, reason: str | None) -> None:
        before = now()
        if reason is None:
            assert backend.mark_as_revoked("t") is True
        else:
            assert backend.mark_as_revoked("t", reason) is True
        after = now()
        meta = backend.get_task_meta("t")
        date_done = utc_between(meta.date_done, before, after)
        assert meta == TaskMeta(
            "t",
            REVOKED,
            result={
                "exc_type": "TaskRevokedError",
                "exc_message": [reason or "revoked"],
                "exc_module": "celery.exceptions",
            },
            date_done=date_done,
        )
        error = backend.get_result("t")
        assert type(error) is TaskRevokedError
        assert str(error) == (reason or "revoked")

    def test_custom_state_with_progress_meta(self, backend: Backend) -> None:
        assert backend.store_result("t", {"current": 3, "total": 10}, "PROGRESS") is True
        assert backend.get_task_meta("t") == TaskMeta(
            "t", "PROGRESS", result={"current": 3, "total": 10}
        )
        assert backend.get_state("t") == "PROGRESS"
        assert backend.get_result("t") == {"current": 3, "total": 10}

    def test_unready_states_replace_each_other(self, backend: Backend) -> None:
        assert backend.mark_as_started("t") is True
        assert backend.store_result("t", {"current": 1}, "PROGRESS") is True
        assert backend.mark_as_retry("t", KeyError("x")) is True
        assert backend.get_state("t") == RETRY
        assert backend.store_result("t", None, PENDING) is True
        assert backend.get_task_meta("t") == TaskMeta("t", PENDING)
        assert backend.mark_as_started("t") is True
        assert backend.mark_as_done("t", "ok") is True
        assert backend.get_result("t") == "ok"

    def test_exception_never_raised_has_no_traceback(self, backend: Backend) -> None:
        backend.mark_as_failure("t", ValueError("never raised"))
        assert backend.get_traceback("t") is None

    def test_explicit_traceback_wins(self, backend: Backend) -> None:
        backend.mark_as_failure("t", fail_with(ValueError("x")), traceback="remote tb text")
        assert backend.get_traceback("t") == "remote tb text"

    @pytest.mark.parametrize("state", ["", None, 3], ids=["empty", "none", "int"])
    def test_state_must_be_a_non_empty_str(self, backend: Backend, state: Any) -> None:
        with pytest.raises(ValueError, match=r"^state") as raised:
            backend.store_result("t", 1, state)
        assert str(raised.value) == f"state must be a non-empty str, got {state!r}"
        assert backend.exists("t") is False

    def test_request_must_be_task_info(self, backend: Backend) -> None:
        with pytest.raises(TypeError) as raised:
            backend.mark_as_done("t", 1, request={"group_id": "g"})  # type: ignore[arg-type]
        assert str(raised.value) == "request must be a TaskInfo, got dict"

    @pytest.mark.parametrize("method", ["mark_as_failure", "mark_as_retry"])
    def test_failure_needs_an_exception(self, backend: Backend, method: str) -> None:
        with pytest.raises(TypeError) as raised:
            getattr(backend, method)("t", "boom")
        assert str(raised.value) == "exc must be an exception instance, got str"
        assert backend.exists("t") is False

    def test_observers_see_every_store_and_whether_it_was_written(self, store_url: str) -> None:
        seen: list[tuple[str, str, bool]] = []

        class Observer:
            @resultstore.hookimpl
            def result_stored(self, meta: TaskMeta, written: bool) -> None:
                seen.append((meta.task_id, meta.status, written))

        with Backend(store_url, plugins=[Observer()]) as backend:
            backend.mark_as_started("t")
            backend.mark_as_done("t", 1)
            backend.mark_as_started("t")
        assert seen == [("t", STARTED, True), ("t", SUCCESS, True), ("t", STARTED, False)]


LATE_WRITES: dict[str, Callable[[Backend], bool]] = {
    "mark_as_started": lambda b: b.mark_as_started("t"),
    "mark_as_retry": lambda b: b.mark_as_retry("t", KeyError("late")),
    "store-PROGRESS": lambda b: b.store_result("t", {"current": 3, "total": 10}, "PROGRESS"),
    "store-PENDING": lambda b: b.store_result("t", None, PENDING),
    "mark_as_failure": lambda b: b.mark_as_failure("t", ValueError("late")),
    "mark_as_done-again": lambda b: b.mark_as_done("t", "second"),
    "mark_as_revoked": lambda b: b.mark_as_revoked("t"),
}


class TestReadyIsNeverReplaced:
    @pytest.mark.parametrize("late", list(LATE_WRITES))
    @pytest.mark.parametrize(
        "first",
        [
            lambda b: b.mark_as_done("t", "first"),
            lambda b: b.mark_as_failure("t", fail_with(ValueError("first"))),
            lambda b: b.mark_as_revoked("t", "first"),
        ],
        ids=[SUCCESS, FAILURE, REVOKED],
    )
    def test_late_write_is_refused(self, backend: Backend, first: Any, late: str) -> None:
        assert first(backend) is True
        stored = backend.get_task_meta("t")
        data = wire(backend, "t")
        assert LATE_WRITES[late](backend) is False
        assert backend.get_task_meta("t") == stored
        assert wire(backend, "t") == data

    def test_overwrite_replaces_a_ready_state(self, backend: Backend) -> None:
        backend.mark_as_done("t", "first")
        assert backend.store_result("t", {"pid": 1}, STARTED, overwrite=True) is True
        assert backend.get_task_meta("t") == TaskMeta("t", STARTED, result={"pid": 1})
        backend.mark_as_failure("t", ValueError("x"))
        assert backend.store_result("t", "second", SUCCESS, overwrite=True) is True
        meta = backend.get_task_meta("t")
        assert (meta.status, meta.result, meta.traceback) == (SUCCESS, "second", None)

    def test_undecodable_bytes_hold_no_state_worth_keeping(self, backend: Backend) -> None:
        put_raw(backend, "t", b"{not json")
        assert backend.mark_as_started("t") is True
        assert backend.get_task_meta("t") == TaskMeta("t", STARTED, result={})


class TestExists:
    def test_unknown_id(self, backend: Backend) -> None:
        assert backend.exists("t") is False
        assert backend.get_task_meta("t") == TaskMeta("t")
        assert backend.get_task_meta("t") == TaskMeta(
            task_id="t", status=PENDING, result=None, traceback=None, date_done=None
        )
        assert backend.get_state("t") == PENDING
        assert backend.get_result("t") is None

    def test_stored_as_pending(self, backend: Backend) -> None:
        assert backend.store_result("t", None, PENDING) is True
        assert backend.exists("t") is True
        assert backend.get_state("t") == PENDING

    def test_stored_then_forgotten(self, backend: Backend, store_url: str) -> None:
        backend.mark_as_done("t", 1)
        assert backend.exists("t") is True
        with Backend(store_url) as other:
            assert other.exists("t") is True
            assert other.forget("t") is True
        assert backend.exists("t") is False
        assert backend.get_task_meta("t") == TaskMeta("t")
        assert wire(backend, "t") is None

    def test_forget_is_idempotent(self, backend: Backend) -> None:
        backend.mark_as_started("t")
        assert backend.forget("t") is True
        assert backend.forget("t") is False
        assert backend.forget("never-stored") is False


# --- failures ----------------------------------------------------------------------


class TestExceptions:
    def test_failure_is_stored_as_celery_dict_with_traceback(self, backend: Backend) -> None:
        exc = fail_with(KeyError("k"))
        backend.mark_as_failure("t", exc)
        meta = backend.get_task_meta("t")
        assert meta.result == {
            "exc_type": "KeyError",
            "exc_message": ["k"],
            "exc_module": "builtins",
        }
        assert meta.traceback == "".join(tb_module.format_exception(exc))
        assert meta.traceback.startswith("Traceback (most recent call last):\n")
        assert "    raise exc  # RAISE-LINE\n" in meta.traceback
        assert meta.traceback.endswith("KeyError: 'k'\n")

    def test_builtin_exception_is_rebuilt(self, backend: Backend) -> None:
        backend.mark_as_failure("t", fail_with(KeyError("k")))
        error = backend.get_result("t")
        assert type(error) is KeyError
        assert error.args == ("k",)

    def test_exception_without_args(self, backend: Backend) -> None:
        backend.mark_as_failure("t", fail_with(ZeroDivisionError()))
        assert backend.get_task_meta("t").result == {
            "exc_type": "ZeroDivisionError",
            "exc_message": [],
            "exc_module": "builtins",
        }
        error = backend.get_result("t")
        assert type(error) is ZeroDivisionError
        assert error.args == ()

    def test_custom_exception_comes_back_as_remote_error(self, backend: Backend) -> None:
        backend.mark_as_failure("t", fail_with(CustomError("boom", 3)))
        meta = backend.get_task_meta("t")
        assert meta.result == {
            "exc_type": "CustomError",
            "exc_message": ["boom", 3],
            "exc_module": __name__,
        }
        error = backend.get_result("t")
        assert type(error) is RemoteError
        assert isinstance(error, ResultStoreError)
        assert not isinstance(error, CustomError)
        assert error.exc_type == "CustomError"
        assert error.exc_module == __name__
        assert error.args == ("boom", 3)
        assert error.traceback == meta.traceback
        assert error.qualified_name == f"{__name__}.CustomError"
        assert str(error) == f"{__name__}.CustomError: boom, 3"

    def test_remote_error_without_args(self, backend: Backend) -> None:
        backend.mark_as_failure("t", CustomError())
        error = backend.get_result("t")
        assert type(error) is RemoteError
        assert str(error) == f"{__name__}.CustomError"

    def test_allowed_custom_exception_is_rebuilt(self, backend: Backend, store_url: str) -> None:
        backend.mark_as_failure("t", fail_with(CustomError("boom", 3)))
        with Backend(store_url, exception_allow=[CustomError]) as consumer:
            error = consumer.get_result("t")
        assert type(error) is CustomError
        assert error.args == ("boom", 3)

    def test_nested_class_is_stored_by_qualname(self, backend: Backend, store_url: str) -> None:
        backend.mark_as_failure("t", Outer.InnerError("deep"))
        assert backend.get_task_meta("t").result == {
            "exc_type": "Outer.InnerError",
            "exc_message": ["deep"],
            "exc_module": __name__,
        }
        assert str(backend.get_result("t")) == f"{__name__}.Outer.InnerError: deep"
        with Backend(store_url, exception_allow=[Outer.InnerError]) as consumer:
            error = consumer.get_result("t")
        assert type(error) is Outer.InnerError
        assert error.args == ("deep",)

    def test_unserializable_argument_is_stored_as_repr(self, backend: Backend) -> None:
        thing = object()
        backend.mark_as_failure("t", fail_with(ValueError(thing, "text", 5)))
        assert backend.get_task_meta("t").result == {
            "exc_type": "ValueError",
            "exc_message": [repr(thing), "text", 5],
            "exc_module": "builtins",
        }
        error = backend.get_result("t")
        assert type(error) is ValueError
        assert error.args == (repr(thing), "text", 5)

    def _store_failure(self, backend: Backend, result: Any) -> None:
        put_raw(
            backend,
            "t",
            celery_bytes(
                {
                    "status": FAILURE,
                    "result": result,
                    "traceback": "remote tb",
                    "children": [],
                    "date_done": "2024-05-01T12:00:00+00:00",
                    "task_id": "t",
                }
            ),
        )

    def test_stored_os_system_is_never_called(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[tuple[Any, ...]] = []

        def trap(*args: Any) -> int:
            calls.append(args)
            raise AssertionError("os.system was called from stored data")

        monkeypatch.setattr(os, "system", trap)
        self._store_failure(
            backend, {"exc_module": "os", "exc_type": "system", "exc_message": ["echo hacked"]}
        )
        error = backend.get_result("t")
        assert type(error) is RemoteError
        assert (error.exc_type, error.exc_module, error.args) == ("system", "os", ("echo hacked",))
        assert error.traceback == "remote tb"
        assert str(error) == "os.system: echo hacked"
        with pytest.raises(RemoteError) as raised:
            AsyncResult("t", backend).get(timeout=0)
        assert str(raised.value) == "os.system: echo hacked"
        assert calls == []

    def test_module_named_in_stored_data_is_never_imported(self, backend: Backend) -> None:
        assert "this" not in sys.modules  # "import this" prints the Zen of Python
        self._store_failure(backend, {"exc_module": "this", "exc_type": "s", "exc_message": []})
        error = backend.get_result("t")
        assert type(error) is RemoteError
        assert str(error) == "this.s"
        assert "this" not in sys.modules

    @pytest.mark.parametrize(
        ("stored", "text"),
        [
            (
                {"exc_module": "builtins", "exc_type": "eval", "exc_message": ["1/0"]},
                "builtins.eval: 1/0",
            ),
            (
                {"exc_module": "builtins", "exc_type": "int", "exc_message": ["5"]},
                "builtins.int: 5",
            ),
            (
                {"exc_module": "builtins", "exc_type": "UnicodeDecodeError", "exc_message": ["x"]},
                "builtins.UnicodeDecodeError: x",
            ),
            (
                {"exc_module": None, "exc_type": "ValueError", "exc_message": ["m"]},
                "ValueError: m",
            ),
            ({"exc_type": "ValueError", "exc_message": "single"}, "ValueError: single"),
            ("boom", "UnknownError: 'boom'"),
        ],
        ids=[
            "builtin-function",
            "builtin-non-exception-class",
            "constructor-fails",
            "no-module",
            "message-not-a-list",
            "not-a-dict",
        ],
    )
    def test_what_cannot_be_rebuilt_comes_back_as_remote_error(
        self, backend: Backend, stored: Any, text: str
    ) -> None:
        self._store_failure(backend, stored)
        error = backend.get_result("t")
        assert type(error) is RemoteError
        assert str(error) == text
        assert error.traceback == "remote tb"

    @pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
    def test_stored_data_cannot_raise_process_exits(self, backend: Backend, name: str) -> None:
        self._store_failure(
            backend, {"exc_module": "builtins", "exc_type": name, "exc_message": [0]}
        )
        error = backend.get_result("t")
        assert type(error) is RemoteError
        assert str(error) == f"builtins.{name}: 0"
        with pytest.raises(RemoteError):
            AsyncResult("t", backend).get(timeout=0)

    @pytest.mark.parametrize("duplicate", [copy.copy, lambda e: pickle.loads(pickle.dumps(e))])
    def test_remote_error_survives_copy_and_pickle(self, duplicate: Any) -> None:
        error = RemoteError("CustomError", "app.tasks", ("boom",), "remote tb")
        twin = duplicate(error)
        assert twin is not error
        assert type(twin) is RemoteError
        assert (twin.exc_type, twin.exc_module, twin.args, twin.traceback) == (
            "CustomError",
            "app.tasks",
            ("boom",),
            "remote tb",
        )
        assert str(twin) == "app.tasks.CustomError: boom"


# --- serialization --------------------------------------------------------------------


class TestSerialization:
    def test_unserializable_result_raises_and_stores_nothing(self, backend: Backend) -> None:
        with pytest.raises(EncodeError) as raised:
            backend.mark_as_done("t", object())
        assert isinstance(raised.value, ValueError)
        assert str(raised.value) == (
            "result of task 't' cannot be serialized with 'json': "
            "Object of type object is not JSON serializable"
        )
        assert backend.exists("t") is False
        assert wire(backend, "t") is None

    def test_unserializable_result_keeps_the_earlier_state(self, backend: Backend) -> None:
        backend.mark_as_started("t", {"pid": 1})
        with pytest.raises(EncodeError, match=r"^result of task 't' cannot be serialized"):
            backend.mark_as_done("t", {"value": object()})
        assert backend.get_task_meta("t") == TaskMeta("t", STARTED, result={"pid": 1})

    def test_unserializable_progress_meta(self, backend: Backend) -> None:
        with pytest.raises(EncodeError) as raised:
            backend.store_result("t", {"current": {1, 2}}, "PROGRESS")
        assert str(raised.value) == (
            "result of task 't' cannot be serialized with 'json': "
            "Object of type set is not JSON serializable"
        )
        assert backend.exists("t") is False

    def test_undecodable_bytes(self, backend: Backend) -> None:
        put_raw(backend, "t", b"{not json")
        with pytest.raises(DecodeError) as raised:
            backend.get_task_meta("t")
        assert isinstance(raised.value, ValueError)
        assert str(raised.value) == (
            "stored meta of task 't' cannot be decoded as 'json': "
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
        )
        with pytest.raises(DecodeError, match=r"^stored meta of task 't' cannot be decoded"):
            AsyncResult("t", backend).state  # noqa: B018

    def test_empty_bytes(self, backend: Backend) -> None:
        put_raw(backend, "t", b"")
        with pytest.raises(DecodeError) as raised:
            backend.get_task_meta("t")
        assert str(raised.value) == "stored meta of task 't' is empty"

    @pytest.mark.parametrize(
        ("data", "shown"),
        [(b"[1, 2]", "[1, 2]"), (b'{"result": 1}', "{'result': 1}"), (b"42", "42")],
        ids=["list", "no-status", "number"],
    )
    def test_json_that_is_not_a_task_record(
        self, backend: Backend, data: bytes, shown: str
    ) -> None:
        put_raw(backend, "t", data)
        with pytest.raises(DecodeError) as raised:
            backend.get_task_meta("t")
        assert str(raised.value) == f"meta of task 't' is not a task record: {shown}"

    @pytest.mark.parametrize("date_done", ["yesterday", 5], ids=["str", "int"])
    def test_bad_date_done_names_the_task(self, backend: Backend, date_done: Any) -> None:
        put_raw(
            backend,
            "t",
            celery_bytes({"status": SUCCESS, "result": 1, "date_done": date_done, "task_id": "t"}),
        )
        with pytest.raises(DecodeError) as raised:
            backend.get_task_meta("t")
        assert "task 't'" in str(raised.value)
        assert repr(date_done) in str(raised.value)

    def test_pickle_bytes_are_refused_without_unpickling(self, backend: Backend) -> None:
        UNPICKLED.clear()
        put_raw(backend, "t", pickle.dumps({"status": SUCCESS, "result": Booby()}))
        with pytest.raises(DecodeError) as raised:
            backend.get_task_meta("t")
        assert str(raised.value) == f"stored meta of task 't' {PICKLE_REFUSED}"
        assert UNPICKLED == []

    def test_pickle_of_plain_dict_is_refused(self, backend: Backend) -> None:
        put_raw(backend, "t", pickle.dumps({"a": 1}))
        with pytest.raises(DecodeError) as raised:
            backend.get_result("t")
        assert str(raised.value) == f"stored meta of task 't' {PICKLE_REFUSED}"

    def test_json_backend_reads_pickle_when_pickle_is_accepted(self, store_url: str) -> None:
        with Backend(store_url, serializer="pickle", accept_content=["pickle", "json"]) as writer:
            writer.mark_as_done("t", {1, 2})
        with Backend(store_url, accept_content=["json", "pickle"]) as reader:
            assert reader.codec.serializer == "json"
            assert reader.get_result("t") == {1, 2}
            reader.mark_as_done("j", [1])
            assert wire(reader, "j") is not None
            assert reader.get_result("j") == [1]

    def test_pickle_round_trip_when_opted_in(self, store_url: str) -> None:
        with Backend(store_url, serializer="pickle", accept_content=["pickle", "json"]) as backend:
            value = {"set": {1, 2}, "tuple": (1, 2), "bytes": b"\x00"}
            assert backend.mark_as_done("t", value) is True
            assert backend.get_result("t") == value
            assert type(backend.get_result("t")["tuple"]) is tuple
            data = wire(backend, "t")
            assert data is not None
            assert data[:1] == b"\x80"
            backend.mark_as_failure("f", fail_with(KeyError("k")))
            error = backend.get_result("f")
            assert type(error) is KeyError
            assert error.args == ("k",)
        with Backend(store_url) as json_only:
            with pytest.raises(DecodeError) as raised:
                json_only.get_task_meta("t")
            assert str(raised.value) == f"stored meta of task 't' {PICKLE_REFUSED}"

    def test_values_round_trip_through_json(self, backend: Backend) -> None:
        value = {"n": 1, "f": 2.5, "s": "é", "l": [1, None, True], "nested": {"a": []}}
        backend.mark_as_done("t", value)
        assert backend.get_result("t") == value
        backend.mark_as_done("tuple", (1, 2))
        assert backend.get_result("tuple") == [1, 2]


# --- task ids ------------------------------------------------------------------------

BAD_IDS = [
    ("", ValueError, "task id must not be empty"),
    (None, TypeError, "task id must be a str, got NoneType: None"),
    (5, TypeError, "task id must be a str, got int: 5"),
    (b"t", TypeError, "task id must be a str, got bytes: b't'"),
    (" t", ValueError, "task id ' t' contains whitespace at its ends or control characters"),
    ("t ", ValueError, "task id 't ' contains whitespace at its ends or control characters"),
    ("a\nb", ValueError, "task id 'a\\nb' contains whitespace at its ends or control characters"),
    (
        "a\x00b",
        ValueError,
        "task id 'a\\x00b' contains whitespace at its ends or control characters",
    ),
    ("x" * 156, ValueError, "task id is 156 characters long; the limit is 155"),
]
BAD_ID_NAMES = [
    "empty",
    "none",
    "int",
    "bytes",
    "lead-space",
    "trail-space",
    "newline",
    "nul",
    "156",
]

ID_OPERATIONS = {
    "mark_as_done": lambda b, t: b.mark_as_done(t, 1),
    "store_result": lambda b, t: b.store_result(t, 1, "PROGRESS"),
    "get_task_meta": lambda b, t: b.get_task_meta(t),
    "get_many": lambda b, t: b.get_many(["ok", t]),
    "exists": lambda b, t: b.exists(t),
    "forget": lambda b, t: b.forget(t),
    "revoke": lambda b, t: b.revoke(t),
    "is_revoked": lambda b, t: b.is_revoked(t),
    "wait_for": lambda b, t: b.wait_for(t, timeout=0),
    "AsyncResult": lambda b, t: AsyncResult(t, b),
}


class TestTaskIds:
    @pytest.mark.parametrize("operation", list(ID_OPERATIONS))
    @pytest.mark.parametrize(("task_id", "exc_type", "message"), BAD_IDS, ids=BAD_ID_NAMES)
    def test_bad_task_id(
        self,
        backend: Backend,
        operation: str,
        task_id: Any,
        exc_type: type[Exception],
        message: str,
    ) -> None:
        with pytest.raises(exc_type) as raised:
            ID_OPERATIONS[operation](backend, task_id)
        assert type(raised.value) is exc_type
        assert str(raised.value) == message
        assert backend.plugin.keys() == []  # type: ignore[attr-defined]

    def test_long_non_str_is_shown_truncated(self) -> None:
        value = ["x" * 100]
        with pytest.raises(TypeError) as raised:
            resultstore.validate_task_id(value)
        assert str(raised.value) == f"task id must be a str, got list: {repr(value)[:80]}"

    def test_group_id_is_named_in_messages(self, backend: Backend) -> None:
        with pytest.raises(ValueError, match=r"^group id") as raised:
            GroupResult("", [], backend)
        assert str(raised.value) == "group id must not be empty"
        with pytest.raises(ValueError, match=r"^group id") as raised:
            backend.restore_group("g\n")
        assert str(raised.value) == (
            "group id 'g\\n' contains whitespace at its ends or control characters"
        )

    @pytest.mark.parametrize(
        "task_id",
        ["a b", "x" * 155, "tâche-1", "d9b1d7db-4f8a-4d5e-8f3c-3a7c2b1e0f9a", "a"],
        ids=["inner-space", "155", "unicode", "uuid", "one-char"],
    )
    def test_good_task_id(self, backend: Backend, task_id: str) -> None:
        assert resultstore.validate_task_id(task_id) == task_id
        assert backend.mark_as_done(task_id, 1) is True
        assert backend.get_result(task_id) == 1
        assert AsyncResult(task_id, backend).get(timeout=0) == 1
        assert backend.plugin.keys() == [f"celery-task-meta-{task_id}"]  # type: ignore[attr-defined]


# --- extended ------------------------------------------------------------------------

INFO = TaskInfo(
    name="tasks.add",
    args=[1, 2],
    kwargs={"a": 1},
    worker="w1",
    retries=2,
    queue="q",
    group_id="g",
    parent_id="p",
)


class TestExtended:
    def test_extended_stores_every_field(self, store_url: str) -> None:
        with Backend(store_url, extended=True) as backend:
            before = now()
            backend.mark_as_done("t", 3, request=INFO)
            after = now()
            meta = backend.get_task_meta("t")
        date_done = utc_between(meta.date_done, before, after)
        assert meta == TaskMeta(
            "t",
            SUCCESS,
            result=3,
            date_done=date_done,
            group_id="g",
            parent_id="p",
            extended=True,
            name="tasks.add",
            args=[1, 2],
            kwargs={"a": 1},
            worker="w1",
            retries=2,
            queue="q",
        )

    def test_not_extended_keeps_group_and_parent_only(self, backend: Backend) -> None:
        backend.mark_as_started("t", request=INFO)
        assert backend.get_task_meta("t") == TaskMeta(
            "t", STARTED, result={}, group_id="g", parent_id="p"
        )

    def test_extended_without_request_leaves_the_fields_out(self, store_url: str) -> None:
        # As Celery: the extended fields come from the request; without one they are absent.
        with Backend(store_url, extended=True) as backend:
            backend.mark_as_started("t")
            assert backend.get_task_meta("t") == TaskMeta("t", STARTED, result={})
            assert wire(backend, "t") == celery_bytes(
                {
                    "status": STARTED,
                    "result": {},
                    "traceback": None,
                    "children": [],
                    "date_done": None,
                    "task_id": "t",
                }
            )

    def test_tuple_args_are_stored_as_a_list(self, store_url: str) -> None:
        with Backend(store_url, extended=True) as backend:
            backend.mark_as_done("t", 1, request=TaskInfo(name="n", args=(1, 2)))
            assert backend.get_task_meta("t").args == [1, 2]


# --- expiry --------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def timed(store_url: str, clock: FakeClock) -> Iterator[Backend]:
    """A backend on the fake clock with the default expiry (one day)."""
    with Backend(store_url, options={"clock": clock}) as backend:
        yield backend


class TestExpiry:
    def test_result_expires_after_one_day(self, timed: Backend, clock: FakeClock) -> None:
        timed.mark_as_done("t", 1)
        clock.advance(86399)
        assert timed.exists("t") is True
        assert timed.get_result("t") == 1
        clock.advance(1)
        assert timed.exists("t") is False
        assert timed.get_task_meta("t") == TaskMeta("t")

    def test_backend_expires_setting(self, store_url: str, clock: FakeClock) -> None:
        with Backend(store_url, expires=10, options={"clock": clock}) as backend:
            backend.mark_as_started("t")
            clock.advance(9.5)
            assert backend.get_state("t") == STARTED
            clock.advance(0.5)
            assert backend.exists("t") is False

    @pytest.mark.parametrize(
        "expires", [10, 10.0, timedelta(seconds=10)], ids=["int", "float", "timedelta"]
    )
    def test_per_call_expires(self, timed: Backend, clock: FakeClock, expires: Any) -> None:
        timed.mark_as_done("short", 1, expires=expires)
        timed.mark_as_failure("failed", ValueError("x"), expires=expires)
        timed.store_result("progress", {"current": 1}, "PROGRESS", expires=expires)
        timed.mark_as_done("default", 2)
        clock.advance(9.5)
        assert [timed.exists(t) for t in ("short", "failed", "progress")] == [True] * 3
        clock.advance(0.5)
        assert [timed.exists(t) for t in ("short", "failed", "progress")] == [False] * 3
        assert timed.get_result("default") == 2

    def test_per_call_expires_none_never_expires(self, timed: Backend, clock: FakeClock) -> None:
        timed.mark_as_done("t", 1, expires=None)
        clock.advance(10 * 365 * 86400)
        assert timed.get_result("t") == 1

    def test_backend_expires_none_never_expires(self, store_url: str, clock: FakeClock) -> None:
        with Backend(store_url, expires=None, options={"clock": clock}) as backend:
            backend.mark_as_done("t", 1)
            clock.advance(10 * 365 * 86400)
            assert backend.get_result("t") == 1
            assert backend.cleanup() == 0

    def test_bad_per_call_expires(self, timed: Backend) -> None:
        with pytest.raises(ValueError, match=r"^expires") as raised:
            timed.mark_as_done("t", 1, expires=0)
        assert str(raised.value) == "expires must be positive (or None for no expiry), got 0"
        with pytest.raises(TypeError) as raised_type:
            timed.mark_as_done("t", 1, expires="soon")  # type: ignore[arg-type]
        assert str(raised_type.value) == "expires must be seconds, a timedelta or None, got 'soon'"
        assert timed.exists("t") is False

    def test_cleanup_returns_the_number_purged(self, timed: Backend, clock: FakeClock) -> None:
        for i in range(3):
            timed.mark_as_done(f"ten-{i}", i, expires=10)
        for i in range(2):
            timed.mark_as_done(f"hundred-{i}", i, expires=100)
        timed.mark_as_done("forever", 0, expires=None)
        GroupResult("g", [AsyncResult("ten-0", timed)], timed).save(expires=10)
        assert timed.cleanup() == 0
        clock.advance(50)
        assert timed.cleanup() == 4
        assert timed.cleanup() == 0
        assert sorted(timed.plugin.keys()) == [  # type: ignore[attr-defined]
            "celery-task-meta-forever",
            "celery-task-meta-hundred-0",
            "celery-task-meta-hundred-1",
        ]
        clock.advance(50)
        assert timed.cleanup() == 2
        assert timed.plugin.keys() == ["celery-task-meta-forever"]  # type: ignore[attr-defined]

    def test_group_expires(self, timed: Backend, clock: FakeClock) -> None:
        group = GroupResult("g", [AsyncResult("a", timed)], timed).save(expires=10)
        clock.advance(9)
        assert GroupResult.restore("g", timed) == group
        clock.advance(1)
        assert GroupResult.restore("g", timed) is None

    def test_revocation_marker_expires(self, timed: Backend, clock: FakeClock) -> None:
        timed.mark_as_done("t", 1)
        timed.revoke("t", expires=10)
        assert timed.is_revoked("t") is True
        clock.advance(10)
        assert timed.is_revoked("t") is False
        assert timed.get_result("t") == 1

    def test_revoke_expires_applies_to_the_revoked_state(
        self, timed: Backend, clock: FakeClock
    ) -> None:
        timed.revoke("t", expires=10)
        assert timed.get_state("t") == REVOKED
        clock.advance(10)
        assert timed.is_revoked("t") is False
        assert timed.exists("t") is False


# --- revocation --------------------------------------------------------------------


class TestRevoke:
    def test_revoke_unknown_id(self, backend: Backend) -> None:
        assert backend.is_revoked("t") is False
        assert backend.revoke("t") is True
        assert backend.get_state("t") == REVOKED
        assert backend.is_revoked("t") is True
        result = AsyncResult("t", backend)
        assert result.state == REVOKED
        assert result.ready() is True
        with pytest.raises(TaskRevokedError) as raised:
            result.get(timeout=0)
        assert str(raised.value) == "revoked"
        assert raised.value.__cause__ is None

    def test_revoke_with_reason(self, backend: Backend) -> None:
        assert AsyncResult("t", backend).revoke("terminated") is True
        with pytest.raises(TaskRevokedError) as raised:
            AsyncResult("t", backend).get(timeout=0)
        assert str(raised.value) == "terminated"

    def test_revoke_running_task_then_late_done_is_refused(self, backend: Backend) -> None:
        backend.mark_as_started("t")
        assert backend.revoke("t") is True
        assert backend.mark_as_done("t", 1) is False
        assert backend.get_state("t") == REVOKED

    def test_revoke_twice_keeps_the_first_reason(self, backend: Backend) -> None:
        assert backend.revoke("t", "first") is True
        assert backend.revoke("t", "second") is True
        assert str(backend.get_result("t")) == "first"

    def test_revoke_finished_task_keeps_its_result(self, backend: Backend) -> None:
        backend.mark_as_done("t", 42)
        stored = backend.get_task_meta("t")
        assert backend.revoke("t") is False
        assert backend.get_task_meta("t") == stored
        assert backend.is_revoked("t") is True
        assert AsyncResult("t", backend).get(timeout=0) == 42

    def test_revocation_is_seen_by_another_backend(self, backend: Backend, store_url: str) -> None:
        backend.revoke("t")
        with Backend(store_url) as worker:
            assert worker.is_revoked("t") is True
            assert worker.is_revoked("other") is False


# --- groups -------------------------------------------------------------------------


class TestGroups:
    def test_save_restore_delete(self, backend: Backend, store_url: str) -> None:
        group = GroupResult(
            "gid", [AsyncResult("t1", backend), AsyncResult("t2", backend)], backend
        )
        assert group.save() is group
        restored = GroupResult.restore("gid", backend)
        assert restored == group
        assert isinstance(restored, GroupResult)
        assert [r.id for r in restored] == ["t1", "t2"]
        assert all(r.backend is backend for r in restored)
        assert restored.backend is backend
        with Backend(store_url) as other:
            assert GroupResult.restore("gid", other) == group
        assert group.delete() is True
        assert GroupResult.restore("gid", backend) is None
        assert group.delete() is False

    def test_restore_unknown_group(self, backend: Backend) -> None:
        assert GroupResult.restore("nope", backend) is None
        assert backend.restore_group("nope") is None

    def test_members_with_parents(self, backend: Backend) -> None:
        parent = AsyncResult("p", backend, parent=AsyncResult("pp", backend))
        group = GroupResult("gid", [AsyncResult("t1", backend, parent=parent)], backend)
        group.save()
        restored = GroupResult.restore("gid", backend)
        assert restored == group
        assert restored is not None
        assert restored.results[0].parent == parent
        assert restored.results[0].parent is not None
        assert restored.results[0].parent.parent == AsyncResult("pp", backend)

    def test_restore_celery_group_with_a_nested_group(self, backend: Backend) -> None:
        backend.plugin.kv_set(  # type: ignore[attr-defined]
            "celery-taskset-meta-gid",
            b'{"result": [["gid", null], [[["t1", null], null], '
            b'[["inner", null], [[["i1", null], null]]]]]}',
            None,
        )
        restored = GroupResult.restore("gid", backend)
        assert restored is not None
        assert restored.results[0] == AsyncResult("t1", backend)
        nested = restored.results[1]
        assert isinstance(nested, GroupResult)
        assert nested == GroupResult("inner", [AsyncResult("i1", backend)], backend)

    def test_stored_record_that_is_not_a_group(self, backend: Backend) -> None:
        backend.plugin.kv_set(  # type: ignore[attr-defined]
            "celery-taskset-meta-gid", b'{"result": [["x", null], null]}', None
        )
        with pytest.raises(ValueError, match=r"^group 'gid'") as raised:
            GroupResult.restore("gid", backend)
        assert str(raised.value) == "group 'gid' holds [['x', None], None], not a group"

    def test_group_bytes_without_result_key(self, backend: Backend) -> None:
        backend.plugin.kv_set("celery-taskset-meta-gid", b'{"x": 1}', None)  # type: ignore[attr-defined]
        with pytest.raises(DecodeError) as raised:
            GroupResult.restore("gid", backend)
        assert str(raised.value) == "meta of group 'gid' is not a group record: {'x': 1}"


# --- Celery's wire format ---------------------------------------------------------------


class TestCeleryWireFormat:
    def test_success_bytes(self, backend: Backend) -> None:
        before = now()
        backend.mark_as_done("t", 42)
        after = now()
        date_done = utc_between(backend.get_task_meta("t").date_done, before, after)
        assert wire(backend, "t") == (
            b'{"status": "SUCCESS", "result": 42, "traceback": null, "children": [], '
            b'"date_done": "' + date_done.isoformat().encode() + b'", "task_id": "t"}'
        )
        assert date_done.isoformat().endswith("+00:00")

    def test_key_order_with_group_parent_and_extended(self, store_url: str) -> None:
        with Backend(store_url, extended=True) as backend:
            backend.mark_as_done("t", {"sum": 3}, request=INFO)
            date_done = backend.get_task_meta("t").date_done
            assert date_done is not None
            assert wire(backend, "t") == celery_bytes(
                {
                    "status": "SUCCESS",
                    "result": {"sum": 3},
                    "traceback": None,
                    "children": [],
                    "date_done": date_done.isoformat(),
                    "group_id": "g",
                    "parent_id": "p",
                    "name": "tasks.add",
                    "args": [1, 2],
                    "kwargs": {"a": 1},
                    "worker": "w1",
                    "retries": 2,
                    "queue": "q",
                    "task_id": "t",
                }
            )

    def test_started_bytes_without_extended(self, backend: Backend) -> None:
        backend.mark_as_started("t", {"pid": 1}, request=INFO)
        assert wire(backend, "t") == (
            b'{"status": "STARTED", "result": {"pid": 1}, "traceback": null, "children": [], '
            b'"date_done": null, "group_id": "g", "parent_id": "p", "task_id": "t"}'
        )

    def test_failure_bytes(self, backend: Backend) -> None:
        exc = fail_with(ValueError("bad"))
        backend.mark_as_failure("t", exc)
        date_done = backend.get_task_meta("t").date_done
        assert date_done is not None
        assert wire(backend, "t") == celery_bytes(
            {
                "status": "FAILURE",
                "result": {
                    "exc_type": "ValueError",
                    "exc_message": ["bad"],
                    "exc_module": "builtins",
                },
                "traceback": "".join(tb_module.format_exception(exc)),
                "children": [],
                "date_done": date_done.isoformat(),
                "task_id": "t",
            }
        )

    def test_children_bytes(self, backend: Backend) -> None:
        child = AsyncResult("c1", backend).as_tuple()
        backend.mark_as_started("t", request=TaskInfo(children=[child]))
        assert wire(backend, "t") == (
            b'{"status": "STARTED", "result": {}, "traceback": null, '
            b'"children": [[["c1", null], null]], "date_done": null, "task_id": "t"}'
        )

    def test_non_ascii_is_escaped_like_celery(self, backend: Backend) -> None:
        backend.store_result("t", "é", "PROGRESS")
        assert wire(backend, "t") == (
            b'{"status": "PROGRESS", "result": "\\u00e9", "traceback": null, "children": [], '
            b'"date_done": null, "task_id": "t"}'
        )

    def test_revoked_bytes_match_celery(self, backend: Backend) -> None:
        backend.mark_as_revoked("t", "revoked")
        date_done = backend.get_task_meta("t").date_done
        assert date_done is not None
        assert wire(backend, "t") == celery_bytes(
            {
                "status": "REVOKED",
                "result": {
                    "exc_type": "TaskRevokedError",
                    "exc_message": ["revoked"],
                    "exc_module": "celery.exceptions",
                },
                "traceback": None,
                "children": [],
                "date_done": date_done.isoformat(),
                "task_id": "t",
            }
        )

    def test_group_bytes(self, backend: Backend) -> None:
        GroupResult("gid", [AsyncResult("t1", backend), AsyncResult("t2", backend)], backend).save()
        data = backend.plugin.kv_get("celery-taskset-meta-gid")  # type: ignore[attr-defined]
        assert data == b'{"result": [["gid", null], [[["t1", null], null], [["t2", null], null]]]}'

    def test_reads_celery_success_with_extended_and_stamps(self, backend: Backend) -> None:
        put_raw(
            backend,
            "t",
            celery_bytes(
                {
                    "status": "SUCCESS",
                    "result": {"sum": 3},
                    "traceback": None,
                    "children": [[["c1", None], None]],
                    "date_done": "2024-05-01T12:00:00.123456+00:00",
                    "group_id": "g",
                    "parent_id": "p",
                    "name": "tasks.add",
                    "args": [1, 2],
                    "kwargs": {"a": 1},
                    "worker": "celery@host",
                    "retries": 0,
                    "queue": "celery",
                    "stamped_headers": ["s"],
                    "stamps": {"s": "v"},
                    "task_id": "t",
                }
            ),
        )
        assert backend.get_task_meta("t") == TaskMeta(
            "t",
            SUCCESS,
            result={"sum": 3},
            children=[[["c1", None], None]],
            date_done=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
            group_id="g",
            parent_id="p",
            extended=True,
            name="tasks.add",
            args=[1, 2],
            kwargs={"a": 1},
            worker="celery@host",
            retries=0,
            queue="celery",
            # Celery's stamps are no field of ours: kept as they came, for hosts to read.
            extra={"stamped_headers": ["s"], "stamps": {"s": "v"}},
        )
        assert AsyncResult("t", backend).children == [AsyncResult("c1", backend)]

    @pytest.mark.parametrize(
        "date_done",
        ["2024-05-01T12:00:00", "2024-05-01T12:00:00Z", "2024-05-01T14:00:00+02:00"],
        ids=["naive-utc", "zulu", "offset"],
    )
    def test_reads_celery_dates(self, backend: Backend, date_done: str) -> None:
        put_raw(
            backend,
            "t",
            celery_bytes(
                {
                    "status": "SUCCESS",
                    "result": 1,
                    "traceback": None,
                    "children": [],
                    "date_done": date_done,
                    "task_id": "t",
                }
            ),
        )
        parsed = backend.get_task_meta("t").date_done
        assert parsed is not None
        assert parsed.utcoffset() is not None
        assert parsed == datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)

    def test_reads_celery_failure_and_revocation(self, backend: Backend) -> None:
        common = {"traceback": "Traceback (most recent call last):\n  ...\nMyError: x\n"}
        put_raw(
            backend,
            "failed",
            celery_bytes(
                {
                    "status": "FAILURE",
                    "result": {"exc_type": "MyError", "exc_message": ["x"], "exc_module": "tasks"},
                    **common,
                    "children": [],
                    "date_done": "2024-05-01T12:00:00+00:00",
                    "task_id": "failed",
                }
            ),
        )
        put_raw(
            backend,
            "revoked",
            celery_bytes(
                {
                    "status": "REVOKED",
                    "result": {
                        "exc_type": "TaskRevokedError",
                        "exc_message": ["terminated"],
                        "exc_module": "celery.exceptions",
                    },
                    "traceback": None,
                    "children": [],
                    "date_done": "2024-05-01T12:00:00+00:00",
                    "task_id": "revoked",
                }
            ),
        )
        error = backend.get_result("failed")
        assert type(error) is RemoteError
        assert str(error) == "tasks.MyError: x"
        assert error.traceback == common["traceback"]
        revoked = backend.get_result("revoked")
        assert type(revoked) is TaskRevokedError
        assert str(revoked) == "terminated"

    def test_reads_celery_group(self, backend: Backend) -> None:
        backend.plugin.kv_set(  # type: ignore[attr-defined]
            "celery-taskset-meta-gid",
            b'{"result": [["gid", null], [[["t1", null], null], [["t2", [["p", null], null]], '
            b"null]]]}",
            None,
        )
        group = GroupResult.restore("gid", backend)
        assert group == GroupResult(
            "gid", [AsyncResult("t1", backend), AsyncResult("t2", backend)], backend
        )
        assert group is not None
        assert group.results[1].parent == AsyncResult("p", backend)
        assert group.results[0].parent is None


def test_forget_also_drops_the_revocation(backend: Backend) -> None:
    backend.revoke("t")
    assert backend.is_revoked("t") is True
    assert backend.forget("t") is True
    assert (backend.is_revoked("t"), backend.exists("t")) == (False, False)
