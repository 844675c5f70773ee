"""The consumer side: AsyncResult, EagerResult, ResultSet and GroupResult on memory://."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

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
    EagerResult,
    GroupResult,
    RemoteError,
    RemoteTraceback,
    ResultSet,
    TaskInfo,
    TaskRevokedError,
    allow_join_result,
    result_from_tuple,
    running_task,
)

from ..doubles import fail_with, hint

NO_JOIN = (
    "never wait for a result inside a task (task 't' is running here): it can deadlock the "
    "worker pool. Chain the tasks instead, or wrap the wait in resultstore.allow_join_result() "
    "if you accept the risk"
)


class AppError(Exception):
    """An application exception the consumer has not allowed."""


@pytest.fixture
def provider(store_url: str) -> Iterator[Backend]:
    """The worker's Backend: a separate object on the consumer's URL."""
    with Backend(store_url) as b:
        yield b


# --- AsyncResult --------------------------------------------------------------------


class TestAsyncResultState:
    def test_unknown_id_reads_pending(self, backend: Backend) -> None:
        result = AsyncResult("t", backend)
        assert result.id == "t"
        assert result.task_id == "t"
        assert result.backend is backend
        assert result.parent is None
        assert result.state == PENDING
        assert result.status == PENDING
        assert result.result is None
        assert result.info is None
        assert result.traceback is None
        assert result.date_done is None
        assert result.children == []
        assert (result.ready(), result.successful(), result.failed()) == (False, False, False)
        assert result.exists() is False

    def test_started_with_meta(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_started("t", {"pid": 7})
        result = AsyncResult("t", backend)
        assert (result.state, result.status) == (STARTED, STARTED)
        assert result.result == {"pid": 7}
        assert result.info == {"pid": 7}
        assert result.date_done is None
        assert (result.ready(), result.successful(), result.failed()) == (False, False, False)
        assert result.exists() is True

    def test_progress(self, backend: Backend, provider: Backend) -> None:
        provider.store_result("t", {"current": 3, "total": 10}, "PROGRESS")
        result = AsyncResult("t", backend)
        assert result.state == "PROGRESS"
        assert result.info == {"current": 3, "total": 10}
        assert result.ready() is False

    def test_success(self, backend: Backend, provider: Backend) -> None:
        before = datetime.now(timezone.utc)
        provider.mark_as_done("t", 42)
        after = datetime.now(timezone.utc)
        result = AsyncResult("t", backend)
        assert result.state == SUCCESS
        assert result.result == 42
        assert result.info == 42
        assert result.traceback is None
        assert result.date_done is not None
        assert result.date_done.utcoffset() == timedelta(0)
        assert before <= result.date_done <= after
        assert (result.ready(), result.successful(), result.failed()) == (True, True, False)
        assert result.exists() is True

    def test_failure(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_failure("t", fail_with(KeyError("k")))
        result = AsyncResult("t", backend)
        assert result.state == FAILURE
        assert type(result.result) is KeyError
        assert result.result.args == ("k",)
        assert result.traceback is not None
        assert "    raise exc  # RAISE-LINE\n" in result.traceback
        assert result.traceback.endswith("KeyError: 'k'\n")
        assert (result.ready(), result.successful(), result.failed()) == (True, False, True)

    def test_retry(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_retry("t", fail_with(ValueError("again")))
        result = AsyncResult("t", backend)
        assert result.state == RETRY
        assert type(result.result) is ValueError
        assert result.result.args == ("again",)
        assert result.date_done is None
        assert (result.ready(), result.successful(), result.failed()) == (False, False, False)

    def test_revoked(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_revoked("t", "terminated")
        result = AsyncResult("t", backend)
        assert result.state == REVOKED
        assert type(result.result) is TaskRevokedError
        assert str(result.result) == "terminated"
        assert (result.ready(), result.successful(), result.failed()) == (True, False, False)

    def test_extended_properties(self, store_url: str, backend: Backend) -> None:
        info = TaskInfo(
            name="tasks.add",
            args=[1, 2],
            kwargs={"a": 1},
            worker="w1",
            retries=2,
            queue="q",
            group_id="g",
            parent_id="p",
        )
        with Backend(store_url, extended=True) as provider:
            provider.mark_as_done("t", 3, request=info)
        result = AsyncResult("t", backend)
        assert (result.name, result.args, result.kwargs) == ("tasks.add", [1, 2], {"a": 1})
        assert (result.worker, result.retries, result.queue) == ("w1", 2, "q")

    def test_extended_properties_are_none_when_not_extended(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_done("t", 3, request=TaskInfo(name="tasks.add", args=[1]))
        result = AsyncResult("t", backend)
        assert (result.name, result.args, result.kwargs) == (None, None, None)
        assert (result.worker, result.retries, result.queue) == (None, None, None)

    def test_children(self, backend: Backend, provider: Backend) -> None:
        children = [
            AsyncResult("c1", backend).as_tuple(),
            GroupResult("g1", [AsyncResult("c2", backend)], backend).as_tuple(),
        ]
        provider.mark_as_done("t", 1, request=TaskInfo(children=children))
        got = AsyncResult("t", backend).children
        assert got == [AsyncResult("c1", backend), GroupResult("g1", [AsyncResult("c2", backend)])]
        assert type(got[0]) is AsyncResult
        assert type(got[1]) is GroupResult

    def test_ready_meta_is_cached_and_forget_clears_it(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_done("t", 1)
        result = AsyncResult("t", backend)
        assert result.ready() is True
        provider.forget("t")
        assert result.state == SUCCESS
        assert result.exists() is True
        result.forget()
        assert result.state == PENDING
        assert result.exists() is False

    def test_unready_meta_is_not_cached(self, backend: Backend, provider: Backend) -> None:
        result = AsyncResult("t", backend)
        assert result.state == PENDING
        provider.mark_as_started("t")
        assert result.state == STARTED
        provider.mark_as_done("t", 5)
        assert result.state == SUCCESS

    def test_forget_through_the_result(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("t", 1)
        AsyncResult("t", backend).forget()
        assert provider.exists("t") is False
        AsyncResult("t", backend).forget()

    def test_backend_must_be_a_backend(self) -> None:
        with pytest.raises(TypeError) as raised:
            AsyncResult("t", None)  # type: ignore[arg-type]
        assert str(raised.value) == "backend must be a resultstore.Backend, got NoneType"


class TestGet:
    def test_returns_the_value(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("t", {"sum": 3})
        result = AsyncResult("t", backend)
        assert result.get() == {"sum": 3}
        assert result.get(timeout=0) == {"sum": 3}
        assert result.wait(timeout=1) == {"sum": 3}

    def test_propagates_the_rebuilt_exception_with_the_remote_traceback(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_failure("t", fail_with(KeyError("k")))
        remote = provider.get_traceback("t")
        assert remote is not None
        with pytest.raises(KeyError) as raised:
            AsyncResult("t", backend).get(timeout=1)
        assert type(raised.value) is KeyError
        assert raised.value.args == ("k",)
        cause = raised.value.__cause__
        assert type(cause) is RemoteTraceback
        assert cause.traceback == remote
        assert "    raise exc  # RAISE-LINE\n" in cause.traceback
        assert str(cause) == "\n\nRemote traceback:\n" + remote.rstrip()

    def test_propagates_remote_error_for_unknown_classes(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_failure("t", fail_with(AppError("nope")))
        with pytest.raises(RemoteError) as raised:
            AsyncResult("t", backend).get(timeout=1)
        assert str(raised.value) == f"{__name__}.AppError: nope"
        assert type(raised.value.__cause__) is RemoteTraceback
        assert raised.value.__cause__.traceback == raised.value.traceback

    def test_failure_without_traceback_has_no_cause(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_failure("t", ValueError("never raised"))
        with pytest.raises(ValueError, match=r"^never raised$") as raised:
            AsyncResult("t", backend).get(timeout=1)
        assert raised.value.__cause__ is None

    def test_propagate_false_returns_the_exception(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_failure("t", fail_with(KeyError("k")))
        provider.mark_as_revoked("r")
        error = AsyncResult("t", backend).get(timeout=1, propagate=False)
        assert type(error) is KeyError
        assert error.args == ("k",)
        revoked = AsyncResult("r", backend).get(timeout=1, propagate=False)
        assert type(revoked) is TaskRevokedError
        assert str(revoked) == "revoked"

    def test_revoked_propagates(self, backend: Backend, provider: Backend) -> None:
        provider.revoke("t")
        with pytest.raises(TaskRevokedError) as raised:
            AsyncResult("t", backend).get(timeout=1)
        assert str(raised.value) == "revoked"

    def test_callback(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("t", 42)
        provider.mark_as_failure("f", KeyError("k"))
        calls: list[tuple[str, Any]] = []
        assert AsyncResult("t", backend).get(callback=lambda i, v: calls.append((i, v))) == 42
        AsyncResult("f", backend).get(propagate=False, callback=lambda i, v: calls.append((i, v)))
        assert calls[0] == ("t", 42)
        assert calls[1][0] == "f"
        assert type(calls[1][1]) is KeyError
        assert calls[1][1].args == ("k",)
        assert len(calls) == 2

    def test_callback_not_called_when_propagating(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_failure("f", KeyError("k"))
        calls: list[tuple[str, Any]] = []
        with pytest.raises(KeyError):
            AsyncResult("f", backend).get(callback=lambda i, v: calls.append((i, v)))
        assert calls == []

    def test_get_inside_a_task_refuses_to_block(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("other", 1)
        result = AsyncResult("other", backend)
        assert resultstore.current_task_id() is None
        with running_task("t"):
            assert resultstore.current_task_id() == "t"
            with pytest.raises(RuntimeError) as raised:
                result.get(timeout=1)
            assert type(raised.value) is RuntimeError
            assert str(raised.value) == NO_JOIN
            with pytest.raises(RuntimeError) as raised_set:
                ResultSet([result]).join(timeout=1)
            assert str(raised_set.value) == NO_JOIN
            with pytest.raises(RuntimeError) as raised_direct:
                resultstore.assert_will_not_block()
            assert str(raised_direct.value) == NO_JOIN
        assert resultstore.current_task_id() is None
        assert result.get(timeout=1) == 1

    def test_allow_join_result(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("other", 1)
        with running_task("t"), allow_join_result():
            assert AsyncResult("other", backend).get(timeout=1) == 1
            assert ResultSet([AsyncResult("other", backend)]).join(timeout=1) == [1]
        with running_task("t"), pytest.raises(RuntimeError):
            AsyncResult("other", backend).get(timeout=1)

    def test_running_task_resets_an_outer_allow(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("other", 1)
        with allow_join_result(), running_task("t"), pytest.raises(RuntimeError) as raised:
            AsyncResult("other", backend).get(timeout=1)
        assert str(raised.value) == NO_JOIN

    def test_disable_sync_subtasks_false(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("other", 1)
        with running_task("t"):
            assert AsyncResult("other", backend).get(timeout=1, disable_sync_subtasks=False) == 1
            assert ResultSet([AsyncResult("other", backend)]).join(
                timeout=1, disable_sync_subtasks=False
            ) == [1]


class TestIdentity:
    def test_as_tuple(self, backend: Backend) -> None:
        assert AsyncResult("t", backend).as_tuple() == (("t", None), None)
        child = AsyncResult("c", backend, parent=AsyncResult("p", backend))
        assert child.as_tuple() == (("c", (("p", None), None)), None)

    def test_round_trip_with_parent(self, backend: Backend) -> None:
        grandparent = AsyncResult("gp", backend)
        child = AsyncResult("c", backend, parent=AsyncResult("p", backend, parent=grandparent))
        for form in (child.as_tuple(), json.loads(json.dumps(child.as_tuple()))):
            rebuilt = result_from_tuple(form, backend)
            assert type(rebuilt) is AsyncResult
            assert rebuilt == child
            assert rebuilt.backend is backend
            assert rebuilt.parent == AsyncResult("p", backend)
            assert rebuilt.parent is not None
            assert rebuilt.parent.parent == grandparent
            assert rebuilt.parent.parent is not None
            assert rebuilt.parent.parent.parent is None

    def test_group_round_trip(self, backend: Backend) -> None:
        group = GroupResult(
            "g",
            [AsyncResult("a", backend), AsyncResult("b", backend)],
            backend,
            parent=AsyncResult("p", backend),
        )
        assert group.as_tuple() == (
            ("g", (("p", None), None)),
            [(("a", None), None), (("b", None), None)],
        )
        rebuilt = result_from_tuple(json.loads(json.dumps(group.as_tuple())), backend)
        assert type(rebuilt) is GroupResult
        assert rebuilt == group
        assert rebuilt.parent == AsyncResult("p", backend)

    def test_plain_id_head(self, backend: Backend) -> None:
        assert result_from_tuple(("t", None), backend) == AsyncResult("t", backend)

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            (5, "5"),
            (("a", 5), "('a', 5)"),
            ((("a", None), None, None), "(('a', None), None, None)"),
        ],
        ids=["int", "bad-nodes", "three-items"],
    )
    def test_not_a_result_tuple(self, backend: Backend, value: Any, shown: str) -> None:
        with pytest.raises(ValueError, match=r"^not a result tuple") as raised:
            result_from_tuple(value, backend)
        assert str(raised.value) == f"not a result tuple: {shown}"

    def test_eq_hash_repr(self, backend: Backend, store_url: str) -> None:
        a = AsyncResult("a", backend)
        with Backend(store_url) as other:
            assert a == AsyncResult("a", other)
        assert a == "a"
        assert "a" == a  # noqa: SIM300 (the reflected comparison)
        assert a != "b"
        assert a != AsyncResult("b", backend)
        assert a != 5
        assert hash(a) == hash("a")
        assert hash(a) == hash(AsyncResult("a", backend))
        assert len({a, AsyncResult("a", backend), AsyncResult("b", backend)}) == 2
        assert repr(a) == "<AsyncResult: a>"
        assert str(a) == "a"


class TestEagerResult:
    def test_success(self) -> None:
        result = EagerResult("e1", 42)
        assert (result.id, result.state, result.status) == ("e1", SUCCESS, SUCCESS)
        assert result.result == 42
        assert result.traceback is None
        assert (result.ready(), result.successful(), result.failed()) == (True, True, False)
        assert result.exists() is True
        assert result.get() == 42
        assert result.get(timeout=0) == 42
        calls: list[tuple[str, Any]] = []
        assert result.get(callback=lambda i, v: calls.append((i, v))) == 42
        assert calls == [("e1", 42)]
        assert result.children == []
        assert result.revoke() is False
        result.forget()
        assert result.get() == 42
        assert repr(result) == "<EagerResult: e1>"
        assert result == "e1"

    def test_failure(self) -> None:
        exc = fail_with(KeyError("k"))
        result = EagerResult("e2", exc, FAILURE, traceback="remote tb")
        assert result.state == FAILURE
        assert result.result is exc
        assert result.traceback == "remote tb"
        assert (result.ready(), result.successful(), result.failed()) == (True, False, True)
        with pytest.raises(KeyError) as raised:
            result.get()
        assert raised.value is exc
        assert type(raised.value.__cause__) is RemoteTraceback
        assert raised.value.__cause__.traceback == "remote tb"
        assert result.get(propagate=False) is exc

    def test_refuses_to_block_inside_a_task(self) -> None:
        with running_task("t"), pytest.raises(RuntimeError) as raised:
            EagerResult("e", 1).get()
        assert str(raised.value) == NO_JOIN

    def test_validates_its_id(self) -> None:
        with pytest.raises(ValueError, match=r"^task id must not be empty$"):
            EagerResult("", 1)


# --- ResultSet and GroupResult ---------------------------------------------------------


def members(backend: Backend, *ids: str) -> list[AsyncResult]:
    return [AsyncResult(i, backend) for i in ids]


class TestResultSetMembers:
    def test_a_member_is_added_once(self, backend: Backend) -> None:
        group = GroupResult("g", members(backend, "a", "b", "a"), backend)
        assert [r.id for r in group] == ["a", "b"]
        group.add(AsyncResult("b", backend))
        group.update(members(backend, "c", "a", "c"))
        assert [r.id for r in group] == ["a", "b", "c"]

    def test_building_a_group_compares_no_members(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Membership is by id in a set: members cost no pairwise comparison
        (the list's ``in`` made 10,000 members 50 million of them)."""
        compared = collections.Counter[str]()
        original = AsyncResult.__eq__

        def counting(self: AsyncResult, other: object) -> bool:
            compared["eq"] += 1
            return original(self, other)  # type: ignore[no-any-return]

        monkeypatch.setattr(AsyncResult, "__eq__", counting)
        ids = [f"t{i}" for i in range(2_000)]
        group = GroupResult("g", [AsyncResult(t, backend) for t in ids], backend)
        assert [r.id for r in group] == ids
        assert compared["eq"] == 0


class TestResultSetStates:
    def test_mixed_states(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("a", 1)
        provider.mark_as_failure("b", KeyError("k"))
        provider.mark_as_started("c")
        rs = ResultSet(members(backend, "a", "b", "c", "d"))
        assert rs.ready() is False
        assert rs.successful() is False
        assert rs.failed() is True
        assert rs.waiting() is True
        assert rs.completed_count() == 1
        provider.mark_as_done("c", 3)
        provider.revoke("d")
        assert rs.ready() is True
        assert rs.waiting() is False
        assert rs.failed() is True
        assert rs.successful() is False
        assert rs.completed_count() == 2

    def test_all_successful(self, backend: Backend, provider: Backend) -> None:
        rs = ResultSet(members(backend, "a", "b"))
        assert (rs.ready(), rs.successful(), rs.failed(), rs.completed_count()) == (
            False,
            False,
            False,
            0,
        )
        provider.mark_as_done("a", 1)
        provider.mark_as_done("b", 2)
        assert (rs.ready(), rs.successful(), rs.failed(), rs.completed_count()) == (
            True,
            True,
            False,
            2,
        )

    def test_revoked_is_not_failed(self, backend: Backend, provider: Backend) -> None:
        provider.revoke("a")
        rs = ResultSet(members(backend, "a"))
        assert (rs.ready(), rs.successful(), rs.failed(), rs.completed_count()) == (
            True,
            False,
            False,
            0,
        )

    def test_container_behaviour(self, backend: Backend) -> None:
        a, b, c = members(backend, "a", "b", "c")
        rs = ResultSet([a, b, a])
        assert len(rs) == 2
        assert list(rs) == [a, b]
        assert rs[1] == b
        assert rs.backend is backend
        rs.add(c)
        rs.update([c, AsyncResult("d", backend)])
        assert [r.id for r in rs] == ["a", "b", "c", "d"]
        rs.remove("b")
        rs.discard(c)
        rs.discard("zzz")
        assert [r.id for r in rs] == ["a", "d"]
        assert rs == ResultSet(members(backend, "a", "d"))
        assert repr(rs) == "<ResultSet: [a, d]>"
        rs.clear()
        assert len(rs) == 0

    def test_rejects_members_of_another_backend_object(
        self, backend: Backend, provider: Backend
    ) -> None:
        a = AsyncResult("a", backend)
        b = AsyncResult("b", provider)
        with pytest.raises(ValueError, match=r"^<AsyncResult: b> uses") as raised:
            ResultSet([a, b])
        assert (
            str(raised.value)
            == f"<AsyncResult: b> uses {provider!r}, but this set uses {backend!r}"
        )
        with pytest.raises(ValueError, match=r"^<AsyncResult: b> uses"):
            ResultSet([], backend=backend).add(b)
        with pytest.raises(ValueError, match=r"^<AsyncResult: b> uses"):
            GroupResult("g", [a, b])

    @pytest.mark.parametrize(
        ("member", "shown"), [("a", "'a'"), (EagerResult("e", 1), "<EagerResult: e>")]
    )
    def test_rejects_what_is_not_an_async_result(
        self, backend: Backend, member: Any, shown: str
    ) -> None:
        with pytest.raises(TypeError) as raised:
            ResultSet([member], backend=backend)
        assert (
            str(raised.value)
            == f"a ResultSet holds AsyncResult or GroupResult objects, got {shown}"
        )

    def test_empty_set(self) -> None:
        rs = ResultSet([])
        assert rs.join() == []
        assert rs.ready() is True
        with pytest.raises(ValueError, match=r"^an empty ResultSet") as raised:
            rs.backend  # noqa: B018
        assert str(raised.value) == "an empty ResultSet has no backend; pass backend="

    def test_forget_a_set(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("a", 1)
        provider.mark_as_started("b")
        rs = ResultSet(members(backend, "a", "b", "c"))
        assert rs.ready() is False
        rs.forget()
        assert [provider.exists(i) for i in "abc"] == [False, False, False]
        assert [r.state for r in rs] == [PENDING] * 3

    def test_revoke_a_set(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("a", 1)
        provider.mark_as_started("b")
        rs = ResultSet(members(backend, "a", "b", "c"))
        rs.revoke()
        assert [provider.get_state(i) for i in "abc"] == [SUCCESS, REVOKED, REVOKED]
        assert [provider.is_revoked(i) for i in "abc"] == [True, True, True]
        assert rs.join(propagate=False)[0] == 1


class TestJoin:
    def test_values_in_member_order(self, backend: Backend, provider: Backend) -> None:
        for i in ("c", "a", "b"):
            provider.mark_as_done(i, i.upper())
        rs = ResultSet(members(backend, "a", "b", "c"))
        assert rs.join() == ["A", "B", "C"]
        assert rs.get(timeout=0) == ["A", "B", "C"]

    def test_raises_the_first_failure(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("a", 1)
        provider.mark_as_failure("b", fail_with(KeyError("first")))
        provider.mark_as_failure("c", fail_with(ValueError("second")))
        with pytest.raises(KeyError) as raised:
            ResultSet(members(backend, "a", "b", "c")).join(timeout=1)
        assert raised.value.args == ("first",)
        assert type(raised.value.__cause__) is RemoteTraceback

    def test_raises_on_revoked(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("a", 1)
        provider.revoke("b", "terminated")
        with pytest.raises(TaskRevokedError, match=r"^terminated$"):
            ResultSet(members(backend, "a", "b")).join(timeout=1)

    def test_propagate_false_returns_exceptions(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("a", 1)
        provider.mark_as_failure("b", KeyError("k"))
        provider.revoke("c")
        values = ResultSet(members(backend, "a", "b", "c")).join(timeout=1, propagate=False)
        assert values[0] == 1
        assert type(values[1]) is KeyError
        assert values[1].args == ("k",)
        assert type(values[2]) is TaskRevokedError
        assert str(values[2]) == "revoked"
        assert len(values) == 3

    def test_callback_in_arrival_order(self, backend: Backend, provider: Backend) -> None:
        for i in ("c", "a", "b"):
            provider.mark_as_done(i, i.upper())
        calls: list[tuple[str, Any]] = []
        rs = ResultSet(members(backend, "a", "b", "c"))
        assert rs.join(callback=lambda i, v: calls.append((i, v))) == ["A", "B", "C"]
        assert calls == [("a", "A"), ("b", "B"), ("c", "C")]

    def test_callback_gets_exceptions_without_propagate(
        self, backend: Backend, provider: Backend
    ) -> None:
        provider.mark_as_failure("a", KeyError("k"))
        calls: list[tuple[str, Any]] = []
        ResultSet(members(backend, "a")).join(propagate=False, callback=lambda *c: calls.append(c))
        assert [(i, type(v), v.args) for i, v in calls] == [("a", KeyError, ("k",))]

    def test_join_timeout(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("a", 1)
        provider.mark_as_started("c")
        with pytest.raises(resultstore.TimeoutError) as raised:
            ResultSet(members(backend, "a", "b", "c")).join(timeout=0.01)
        assert str(raised.value) == "2 tasks were not ready within 0.01 s: 'b', 'c'" + hint(backend)

    def test_join_timeout_lists_five_ids(self, backend: Backend) -> None:
        ids = [f"t{i}" for i in range(7)]
        with pytest.raises(resultstore.TimeoutError) as raised:
            ResultSet(members(backend, *ids)).join(timeout=0)
        assert str(raised.value) == (
            "7 tasks were not ready within 0 s: 't0', 't1', 't2', 't3', 't4', ..." + hint(backend)
        )

    def test_as_completed_yields_in_completion_order(
        self, backend: Backend, provider: Backend
    ) -> None:
        rs = ResultSet(members(backend, "a", "b", "c"))
        completed = rs.as_completed(timeout=5)
        provider.mark_as_done("b", "B")
        assert next(completed) == "b"
        provider.mark_as_done("c", "C")
        assert next(completed) == "c"
        provider.mark_as_done("a", "A")
        assert next(completed) == "a"
        with pytest.raises(StopIteration):
            next(completed)
        assert backend.waiting_ids() == frozenset()

    def test_as_completed_yields_already_ready_members_in_member_order(
        self, backend: Backend, provider: Backend
    ) -> None:
        for i in ("c", "a", "b"):
            provider.mark_as_done(i, i)
        rs = ResultSet(members(backend, "a", "b", "c"))
        assert [r.id for r in rs.as_completed(timeout=0)] == ["a", "b", "c"]
        assert [r.id for r in rs.as_completed(timeout=0)] == ["a", "b", "c"]

    def test_group_result_joins(self, backend: Backend, provider: Backend) -> None:
        provider.mark_as_done("a", 1)
        provider.mark_as_done("b", 2)
        group = GroupResult("g", members(backend, "a", "b"), backend)
        assert group.join(timeout=1) == [1, 2]
        assert repr(group) == "<GroupResult: g [a, b]>"
        assert group == GroupResult("g", members(backend, "a", "b"))
        assert group != GroupResult("h", members(backend, "a", "b"))


class CountingWrapper:
    """Counts the storage reads a Backend makes, passing each through."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    @resultstore.hookimpl(wrapper=True)
    def get_many(self, task_ids: list[str]) -> Any:
        self.calls["get_many"] += 1
        return (yield)

    @resultstore.hookimpl(wrapper=True)
    def get(self, task_id: str) -> Any:
        self.calls["get"] += 1
        return (yield)


class TestRoundTrips:
    @pytest.fixture
    def counter(self) -> CountingWrapper:
        return CountingWrapper()

    @pytest.fixture
    def counted(self, store_url: str, counter: CountingWrapper) -> Iterator[Backend]:
        with Backend(store_url, plugins=[counter]) as b:
            yield b

    def test_join_of_100_done_results_is_one_get_many(
        self, counted: Backend, counter: CountingWrapper, provider: Backend
    ) -> None:
        ids = [f"t{i:03d}" for i in range(100)]
        for i, task_id in enumerate(ids):
            provider.mark_as_done(task_id, i)
        assert counter.calls == {}
        rs = ResultSet(members(counted, *ids))
        assert rs.join(timeout=1) == list(range(100))
        assert counter.calls == {"get_many": 1}
        assert rs.join(timeout=1) == list(range(100))
        assert counter.calls == {"get_many": 1}

    def test_set_states_are_one_get_many(
        self, counted: Backend, counter: CountingWrapper, provider: Backend
    ) -> None:
        ids = [f"t{i}" for i in range(10)]
        for task_id in ids[:5]:
            provider.mark_as_done(task_id, 1)
        rs = ResultSet(members(counted, *ids))
        assert rs.completed_count() == 5
        assert counter.calls == {"get_many": 1}
        assert rs.ready() is False
        assert counter.calls == {"get_many": 2}

    def test_single_get_is_one_get(
        self, counted: Backend, counter: CountingWrapper, provider: Backend
    ) -> None:
        provider.mark_as_done("t", 1)
        assert AsyncResult("t", counted).get(timeout=1) == 1
        assert counter.calls == {"get": 1}


class TestNestedGroups:
    """A group nested in a group (Celery stores these for a chain ending in a group)."""

    def make(self, backend: Backend) -> GroupResult:
        inner = GroupResult("inner", [AsyncResult("i1", backend), AsyncResult("i2", backend)])
        return GroupResult("outer", [AsyncResult("t1", backend), inner], backend)

    def test_states_count_the_nested_group_as_one_member(self, backend: Backend) -> None:
        group = self.make(backend)
        backend.mark_as_done("t1", 1)
        backend.mark_as_done("i1", 2)
        assert (group.ready(), group.completed_count()) == (False, 1)
        backend.mark_as_done("i2", 3)
        assert (group.ready(), group.successful(), group.completed_count()) == (True, True, 2)
        assert [r.id for r in group.leaves()] == ["t1", "i1", "i2"]

    def test_join_returns_nested_values(self, backend: Backend) -> None:
        group = self.make(backend)
        for task_id, value in (("t1", 1), ("i1", 2), ("i2", 3)):
            backend.mark_as_done(task_id, value)
        assert group.join(timeout=1) == [1, [2, 3]]

    def test_join_propagates_a_nested_failure(self, backend: Backend) -> None:
        group = self.make(backend)
        backend.mark_as_done("t1", 1)
        backend.mark_as_failure("i2", KeyError("deep"))
        with pytest.raises(KeyError, match="deep"):
            group.join(timeout=1)

    def test_as_completed_yields_the_nested_group_when_all_its_members_are_done(
        self, backend: Backend
    ) -> None:
        group = self.make(backend)
        backend.mark_as_done("i1", 2)
        backend.mark_as_done("i2", 3)
        backend.mark_as_done("t1", 1)
        assert [m.id for m in group.as_completed(timeout=1)] == ["t1", "inner"]

    def test_save_and_restore_keep_the_nesting(self, backend: Backend) -> None:
        group = self.make(backend).save()
        restored = GroupResult.restore("outer", backend)
        assert restored == group
        assert restored is not None
        assert restored.as_tuple() == group.as_tuple()
