"""resultstore: plugin-based result backends for Python task systems.

Pick a storage engine by URL, store task states from workers, fetch and wait
for them from anywhere. Wire-compatible with Celery's result backends.
"""

from __future__ import annotations

from ._args import validate_task_id
from ._backend import Backend
from ._context import allow_join_result, assert_will_not_block, current_task_id, running_task
from ._deadline import time_left
from ._errors import (
    AmbiguousBackend,
    BackendLoadError,
    BackendNotFound,
    BackendUnavailable,
    DecodeError,
    EncodeError,
    InvalidURL,
    PluginValidationError,
    RemoteError,
    RemoteTraceback,
    ResultStoreError,
    TaskRevokedError,
    TimeoutError,
    UnsupportedOperation,
    WorkerLostError,
)
from ._executor import Executor, Signature, Task
from ._hookspecs import NotifyChannel, OnChange, hookimpl, hookspec
from ._kv import KeyValueStore
from ._listing import CountQuery, ListQuery, ResultPage
from ._loops import PerLoop
from ._meta import GroupMeta, TaskInfo, TaskMeta
from ._plugins import BackendConfig, Capability
from ._provider import TaskRun, current_run
from ._registry import installed_schemes, register_backend, resolve, unregister_backend
from ._result import AsyncResult, EagerResult, GroupResult, ResultSet, result_from_tuple
from ._retry import RetryPolicy
from ._serialization import Codec
from ._states import (
    ALL_STATES,
    EXCEPTION_STATES,
    FAILURE,
    PENDING,
    PROPAGATE_STATES,
    READY_STATES,
    RECEIVED,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    UNREADY_STATES,
)
from ._url import URL, mask_password
from ._watch import Watch

__version__ = "0.1.0"

__all__ = [
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

# Public classes say "resultstore.X" in reprs, tracebacks and stored failures
# (exc_module), whichever private module defines them.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("resultstore._"):
        _obj.__module__ = __name__
del _name, _obj
