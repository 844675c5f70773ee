"""The consumer side: AsyncResult, ResultSet, GroupResult and EagerResult."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator, Sequence
from contextlib import aclosing, closing
from datetime import datetime
from typing import Any, NoReturn

from ._args import DEFAULT, DEFAULT_INTERVAL, Expires, _Default, validate_task_id
from ._backend import Backend
from ._context import assert_will_not_block
from ._errors import RemoteTraceback
from ._meta import TaskMeta
from ._states import FAILURE, PROPAGATE_STATES, READY_STATES, SUCCESS
from ._wait import OnMessage

Callback = Callable[[str, Any], None]


class AsyncResult:
    """A task's result, read through its backend. Ready metas are cached."""

    def __init__(
        self, id: str, backend: Backend, parent: AsyncResult | GroupResult | None = None
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a resultstore.Backend, got {type(backend).__name__}")
        self.id = validate_task_id(id)
        self.backend = backend
        self.parent = parent
        self._cache: TaskMeta | None = None

    @property
    def task_id(self) -> str:
        return self.id

    def _get_meta(self) -> TaskMeta:
        if self._cache is not None:
            return self._cache
        return self._keep(self.backend.get_task_meta(self.id))

    async def _aget_meta(self) -> TaskMeta:
        if self._cache is not None:
            return self._cache
        return self._keep(await self.backend.aget_task_meta(self.id))

    def _keep(self, meta: TaskMeta) -> TaskMeta:
        """Cache a ready meta: it never changes again."""
        if meta.ready:
            self._cache = meta
        return meta

    def _value(self, meta: TaskMeta) -> Any:
        return self.backend.result_value(meta)

    # --- state -------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The task's state; PENDING also for ids nothing is stored for (see ``exists``)."""
        return self._get_meta().status

    status = state

    @property
    def result(self) -> Any:
        """The return value, the progress meta, or the exception of a failed task."""
        return self._value(self._get_meta())

    info = result

    @property
    def traceback(self) -> str | None:
        return self._get_meta().traceback

    @property
    def date_done(self) -> datetime | None:
        return self._get_meta().date_done

    @property
    def name(self) -> str | None:
        return self._get_meta().name

    @property
    def args(self) -> Any:
        return self._get_meta().args

    @property
    def kwargs(self) -> Any:
        return self._get_meta().kwargs

    @property
    def worker(self) -> str | None:
        return self._get_meta().worker

    @property
    def retries(self) -> int | None:
        return self._get_meta().retries

    @property
    def queue(self) -> str | None:
        return self._get_meta().queue

    @property
    def children(self) -> list[AsyncResult | GroupResult]:
        return [result_from_tuple(child, self.backend) for child in self._get_meta().children]

    def ready(self) -> bool:
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    def exists(self) -> bool:
        """Whether anything is stored: tells an unknown id from a PENDING one."""
        return self._cache is not None or self.backend.exists(self.id)

    async def astate(self) -> str:
        """:attr:`state` for coroutines (a property cannot be awaited)."""
        return (await self._aget_meta()).status

    async def aready(self) -> bool:
        """:meth:`ready` for coroutines."""
        return (await self.astate()) in READY_STATES

    # --- waiting -----------------------------------------------------------------

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = DEFAULT_INTERVAL,
        callback: Callback | None = None,
        on_message: OnMessage | None = None,
        disable_sync_subtasks: bool = True,
    ) -> Any:
        """Wait until the task is ready and return its value.

        Re-raises the task's exception (with the remote traceback as its cause)
        when it failed or was revoked and ``propagate`` is true. ``timeout`` is
        in seconds and exact; at the deadline :class:`resultstore.TimeoutError`
        (a subclass of the builtin ``TimeoutError``) is raised. ``on_message``
        sees every state the wait observes, progress included.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        return self._outcome(self._wait(timeout, interval, on_message), propagate, callback)

    wait = get

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = DEFAULT_INTERVAL,
        callback: Callback | None = None,
        on_message: OnMessage | None = None,
        disable_sync_subtasks: bool = True,
    ) -> Any:
        """:meth:`get` for coroutines (``await result`` is ``await result.aget()``).

        Wakes by the plugin's push channel without a thread per waiter and never
        blocks the event loop. Cancelled (or timed out), it leaves no subscription.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        meta = await self._await_meta(timeout, interval, on_message)
        return self._outcome(meta, propagate, callback)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.aget().__await__()

    def _outcome(self, meta: TaskMeta, propagate: bool, callback: Callback | None) -> Any:
        if propagate and meta.status in PROPAGATE_STATES:
            self._raise(meta)
        value = self._value(meta)
        if callback is not None:
            callback(self.id, value)
        return value

    def _wait(
        self, timeout: float | None, interval: float, on_message: OnMessage | None
    ) -> TaskMeta:
        if self._cache is None:
            self._cache = self.backend.wait_for(self.id, timeout, interval, on_message)
        return self._cache

    async def _await_meta(
        self, timeout: float | None, interval: float, on_message: OnMessage | None
    ) -> TaskMeta:
        if self._cache is None:
            ids = [self.id]
            async with self.backend.aiter_ready(ids, timeout, interval, on_message) as ready:
                self._cache = await ready.__anext__()
        return self._cache

    def _raise(self, meta: TaskMeta) -> NoReturn:
        exc = self._value(meta)
        if meta.traceback:
            raise exc from RemoteTraceback(meta.traceback)
        raise exc

    # --- changing -------------------------------------------------------------------

    def forget(self) -> None:
        """Delete the stored result (idempotent)."""
        self._cache = None
        self.backend.forget(self.id)

    def revoke(self, reason: str = "revoked", *, expires: Expires | _Default = DEFAULT) -> bool:
        """Revoke the task; see :meth:`Backend.revoke`."""
        self._cache = None
        return self.backend.revoke(self.id, reason, expires=expires)

    # --- identity -------------------------------------------------------------------

    def as_tuple(self) -> Any:
        return (self.id, self.parent.as_tuple() if self.parent else None), None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id


class EagerResult(AsyncResult):
    """A result known without a backend (a task run in-process)."""

    def __init__(
        self, id: str, ret_value: Any, state: str = SUCCESS, traceback: str | None = None
    ) -> None:
        self.id = validate_task_id(id)
        self.parent = None
        self._ret_value = ret_value
        self._cache = TaskMeta(id, status=state, result=ret_value, traceback=traceback)

    def _get_meta(self) -> TaskMeta:
        assert self._cache is not None
        return self._cache

    def _value(self, meta: TaskMeta) -> Any:
        return self._ret_value

    def _wait(
        self, timeout: float | None, interval: float, on_message: OnMessage | None
    ) -> TaskMeta:
        return self._get_meta()

    async def _aget_meta(self) -> TaskMeta:
        return self._get_meta()

    async def _await_meta(
        self, timeout: float | None, interval: float, on_message: OnMessage | None
    ) -> TaskMeta:
        return self._get_meta()

    def exists(self) -> bool:
        return True

    def forget(self) -> None:
        pass

    def revoke(self, reason: str = "revoked", *, expires: Expires | _Default = DEFAULT) -> bool:
        return False

    @property
    def children(self) -> list[AsyncResult | GroupResult]:
        return []


class ResultSet:
    """Several results read and joined together through one backend.

    Members are AsyncResults or GroupResults (a group nested in a group, as
    Celery stores a group whose chain ends in a group); a nested group counts
    as one member, ready when all of its own members are.
    """

    def __init__(
        self, results: Iterable[AsyncResult | GroupResult], backend: Backend | None = None
    ) -> None:
        self.results: list[AsyncResult | GroupResult] = []
        self._backend = backend
        self.update(results)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise ValueError("an empty ResultSet has no backend; pass backend=")
        return self._backend

    def add(self, result: AsyncResult | GroupResult) -> None:
        self.update([result])

    def update(self, results: Iterable[AsyncResult | GroupResult]) -> None:
        """Add each of ``results`` that is not a member yet (in one pass: a group of
        10,000 is built in linear time, not by 50 million comparisons)."""
        members = {_key(member) for member in self.results}
        for result in results:
            is_group = isinstance(result, GroupResult)
            if not (is_group or isinstance(result, AsyncResult)) or isinstance(result, EagerResult):
                raise TypeError(
                    f"a ResultSet holds AsyncResult or GroupResult objects, got {result!r}"
                )
            backend = result.backend
            if self._backend is None:
                self._backend = backend
            elif backend is not self._backend:
                raise ValueError(
                    f"{result!r} uses {backend!r}, but this set uses {self._backend!r}"
                )
            key = _key(result)
            if key not in members:
                members.add(key)
                self.results.append(result)

    def remove(self, result: AsyncResult | GroupResult | str) -> None:
        self.results.remove(result)  # type: ignore[arg-type]

    def discard(self, result: AsyncResult | GroupResult | str) -> None:
        if result in self.results:
            self.remove(result)

    def clear(self) -> None:
        self.results.clear()

    def leaves(self) -> list[AsyncResult]:
        """Every task result in the set, nested groups flattened, each id once."""
        found: dict[str, AsyncResult] = {}
        for member in self.results:
            for leaf in member.leaves() if isinstance(member, GroupResult) else [member]:
                found.setdefault(leaf.id, leaf)
        return list(found.values())

    def _member_metas(self) -> list[list[TaskMeta]]:
        """Each member's task metas, from one read for all (ready ones are cached)."""
        leaves = self.leaves()
        todo = [r.id for r in leaves if r._cache is None]
        fresh = self.backend.get_many(todo) if todo else {}
        metas: dict[str, TaskMeta] = {}
        for leaf in leaves:
            meta = leaf._cache or fresh[leaf.id]
            if meta.ready:
                leaf._cache = meta
            metas[leaf.id] = meta
        return [[metas[leaf.id] for leaf in _leaves_of(member)] for member in self.results]

    def ready(self) -> bool:
        return all(m.ready for member in self._member_metas() for m in member)

    def successful(self) -> bool:
        return all(m.status == SUCCESS for member in self._member_metas() for m in member)

    def failed(self) -> bool:
        return any(m.status == FAILURE for member in self._member_metas() for m in member)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded (Celery's definition)."""
        return sum(all(m.status == SUCCESS for m in member) for member in self._member_metas())

    def _split_leaves(self) -> tuple[list[AsyncResult], dict[str, AsyncResult]]:
        """The leaves known to be ready, and the others by id."""
        leaves = self.leaves()
        done = [leaf for leaf in leaves if leaf._cache is not None]
        return done, {leaf.id: leaf for leaf in leaves if leaf._cache is None}

    def _completed_leaves(
        self, timeout: float | None, interval: float, on_message: OnMessage | None
    ) -> Generator[AsyncResult, None, None]:
        done, by_id = self._split_leaves()
        yield from done
        if not by_id:
            return
        with self.backend.iter_ready(list(by_id), timeout, interval, on_message) as ready:
            for meta in ready:
                yield _arrived(by_id, meta)

    async def _acompleted_leaves(
        self, timeout: float | None, interval: float, on_message: OnMessage | None
    ) -> AsyncGenerator[AsyncResult, None]:
        done, by_id = self._split_leaves()
        for leaf in done:
            yield leaf
        if not by_id:
            return
        async with self.backend.aiter_ready(list(by_id), timeout, interval, on_message) as ready:
            async for meta in ready:
                yield _arrived(by_id, meta)

    def as_completed(
        self,
        timeout: float | None = None,
        interval: float = DEFAULT_INTERVAL,
        on_message: OnMessage | None = None,
    ) -> Generator[AsyncResult | GroupResult, None, None]:
        """Yield members as each becomes ready; one deadline for all of them."""
        members = _Completion(self.results)
        with closing(self._completed_leaves(timeout, interval, on_message)) as done:
            for leaf in done:
                yield from members.completed_by(leaf)

    async def aas_completed(
        self,
        timeout: float | None = None,
        interval: float = DEFAULT_INTERVAL,
        on_message: OnMessage | None = None,
    ) -> AsyncGenerator[AsyncResult | GroupResult, None]:
        """:meth:`as_completed` for coroutines (``async for member in result_set``)."""
        members = _Completion(self.results)
        async with aclosing(self._acompleted_leaves(timeout, interval, on_message)) as done:
            async for leaf in done:
                for member in members.completed_by(leaf):
                    yield member

    def __aiter__(self) -> AsyncGenerator[AsyncResult | GroupResult, None]:
        return self.aas_completed()

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = DEFAULT_INTERVAL,
        callback: Callback | None = None,
        on_message: OnMessage | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """Wait for every member and return their values in member order.

        Reads all pending tasks in one round trip per wake-up. With
        ``propagate``, the first failure to arrive is raised at once.
        ``callback(task_id, value)`` is called as each task arrives. A nested
        group's value is the list of its own members' values.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        # closing(): a raise below must end the wait (and its subscriptions) now,
        # not when the traceback holding this frame is freed.
        with closing(self._completed_leaves(timeout, interval, on_message)) as leaves:
            for leaf in leaves:
                leaf._outcome(leaf._get_meta(), propagate, callback)
        return [_value_of(member) for member in self.results]

    get = join

    async def ajoin(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = DEFAULT_INTERVAL,
        callback: Callback | None = None,
        on_message: OnMessage | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """:meth:`join` for coroutines: the values in member order, without blocking the loop."""
        if disable_sync_subtasks:
            assert_will_not_block()
        async with aclosing(self._acompleted_leaves(timeout, interval, on_message)) as leaves:
            async for leaf in leaves:
                leaf._outcome(leaf._get_meta(), propagate, callback)
        return [_value_of(member) for member in self.results]

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def revoke(self, reason: str = "revoked") -> None:
        for result in self.results:
            result.revoke(reason)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult | GroupResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult | GroupResult:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """A ResultSet with an id, which can be saved to and restored from the backend."""

    def __init__(
        self,
        id: str,
        results: Sequence[AsyncResult | GroupResult] = (),
        backend: Backend | None = None,
        parent: AsyncResult | GroupResult | None = None,
    ) -> None:
        self.id = validate_task_id(id, "group id")
        self.parent = parent
        super().__init__(results, backend)

    def save(self, *, expires: Expires | _Default = DEFAULT) -> GroupResult:
        self.backend.save_group(self.id, self, expires=expires)
        return self

    def delete(self) -> bool:
        return self.backend.delete_group(self.id)

    @classmethod
    def restore(cls, id: str, backend: Backend) -> GroupResult | None:
        return backend.restore_group(id)

    def as_tuple(self) -> Any:
        parent = self.parent.as_tuple() if self.parent else None
        return (self.id, parent), [r.as_tuple() for r in self.results]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def _arrived(by_id: dict[str, AsyncResult], meta: TaskMeta) -> AsyncResult:
    leaf = by_id[meta.task_id]
    leaf._cache = meta
    return leaf


class _Completion:
    """Which members are complete, as their leaves arrive (a nested group needs all of its)."""

    def __init__(self, members: list[AsyncResult | GroupResult]) -> None:
        self._members = members
        self._pending = {id(m): {leaf.id for leaf in _leaves_of(m)} for m in members}

    def completed_by(self, leaf: AsyncResult) -> Iterator[AsyncResult | GroupResult]:
        for member in self._members:
            waiting_for = self._pending.get(id(member))
            if waiting_for is not None and leaf.id in waiting_for:
                waiting_for.discard(leaf.id)
                if not waiting_for:
                    del self._pending[id(member)]
                    yield member


def _key(member: AsyncResult | GroupResult) -> tuple[bool, str]:
    """What makes a member the same member (AsyncResults are equal by id)."""
    return isinstance(member, GroupResult), member.id


def _leaves_of(member: AsyncResult | GroupResult) -> list[AsyncResult]:
    return member.leaves() if isinstance(member, GroupResult) else [member]


def _value_of(member: AsyncResult | GroupResult) -> Any:
    if isinstance(member, GroupResult):
        return [_value_of(m) for m in member.results]
    return member._value(member._get_meta())


def result_from_tuple(value: Any, backend: Backend) -> AsyncResult | GroupResult:
    """Rebuild a result from its ``as_tuple`` form (the form Celery stores)."""
    try:
        head, nodes = value
        task_id, parent = head if isinstance(head, (list, tuple)) else (head, None)
    except (TypeError, ValueError):
        raise ValueError(f"not a result tuple: {value!r:.200}") from None
    parent_result = result_from_tuple(parent, backend) if parent else None
    if nodes is not None:
        if not isinstance(nodes, (list, tuple)):
            raise ValueError(f"not a result tuple: {value!r:.200}")
        members = [result_from_tuple(node, backend) for node in nodes]
        return GroupResult(task_id, members, backend, parent=parent_result)
    return AsyncResult(task_id, backend, parent=parent_result)
