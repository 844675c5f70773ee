"""Records that cannot be turned into a task meta are a DecodeError naming the task id.

Whatever bytes an engine holds for an id (another program's, a damaged one, a hostile
one), reading them raises :class:`resultstore.DecodeError` with the id in its message:
never a ``TypeError`` from deep inside, a ``RecursionError`` or a wrong value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from resultstore import AsyncResult, Backend, DecodeError, EncodeError, TaskMeta

from ..doubles import BytesPlugin, bytes_plugin

DEEP = 200_000


@pytest.fixture
def backend() -> Iterator[Backend]:
    with bytes_plugin() as b:
        yield b


def put(task_id: str, data: bytes) -> None:
    BytesPlugin.data[f"celery-task-meta-{task_id}"] = data


def meta_bytes(**fields: object) -> bytes:
    return json.dumps({"status": "SUCCESS", "result": 1, "task_id": "t", **fields}).encode()


MALFORMED = {
    "children is a number": meta_bytes(children=5),
    "children is a string": meta_bytes(children="abc"),
    "children is a mapping": meta_bytes(children={"a": 1}),
    "traceback is a number": meta_bytes(traceback=3),
    "group_id is a list": meta_bytes(group_id=["g"]),
    "parent_id is a number": meta_bytes(parent_id=1),
    "retries is a string": meta_bytes(name="n", retries="3"),
    "worker is a number": meta_bytes(name="n", worker=7),
    "status is missing": json.dumps({"result": 1}).encode(),
    "not an object": b"[1, 2, 3]",
    "nested 200,000 deep": b'{"status": "SUCCESS", "result": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "bad date": meta_bytes(date_done="yesterday"),
    "not json": b"{status: SUCCESS}",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_record_reads_as_a_decode_error_naming_the_task(
    backend: Backend, data: bytes
) -> None:
    put("bad-1", data)
    with pytest.raises(DecodeError, match="task 'bad-1'"):
        backend.get_task_meta("bad-1")
    with pytest.raises(DecodeError, match="task 'bad-1'"):
        backend.get_many(["ok", "bad-1"])
    with pytest.raises(DecodeError, match="task 'bad-1'"):
        AsyncResult("bad-1", backend).get(timeout=5)


def test_children_keep_their_type_when_well_formed(backend: Backend) -> None:
    put("t", meta_bytes(children=[["c1", None], None]))
    assert backend.get_task_meta("t").children == [["c1", None], None]
    put("t", meta_bytes(children=None))
    assert backend.get_task_meta("t").children == []


def test_from_wire_rejects_what_is_not_a_meta_with_a_value_error() -> None:
    with pytest.raises(
        ValueError, match=r"^meta of task 'x': children must be a list or null, got 5$"
    ):
        TaskMeta.from_wire("x", {"status": "SUCCESS", "children": 5})
    with pytest.raises(
        ValueError, match=r"^meta of task 'x': traceback must be a str or null, got 3$"
    ):
        TaskMeta.from_wire("x", {"status": "SUCCESS", "traceback": 3})
    with pytest.raises(
        ValueError, match=r"^meta of task 'x': retries must be an int or null, got '3'$"
    ):
        TaskMeta.from_wire("x", {"status": "SUCCESS", "name": "n", "retries": "3"})


def test_deep_nesting_on_the_way_in_is_an_encode_error(backend: Backend) -> None:
    value: list[object] = []
    for _ in range(DEEP):
        value = [value]

    with pytest.raises(EncodeError, match="result of task 'deep' cannot be serialized"):
        backend.mark_as_done("deep", value)
    assert not backend.exists("deep")
