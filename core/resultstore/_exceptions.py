"""Failures on the wire: ``{exc_type, exc_message, exc_module}`` and back.

Rebuilding never imports anything: a class is rebuilt only when it is a
builtin ``Exception`` subclass or one the user allowed by passing the class itself.
Anything else comes back as :class:`RemoteError`, which keeps the stored
type name, module, arguments and traceback.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._errors import EncodeError, RemoteError, TaskRevokedError, WorkerLostError
from ._errors import TimeoutError as ResultTimeoutError

# Exceptions raised by resultstore itself, and Celery's names for the same things,
# so that results written by either side rebuild to the same class.
_KNOWN: dict[tuple[str, str], type[BaseException]] = {
    ("resultstore", "TaskRevokedError"): TaskRevokedError,
    ("resultstore", "TimeoutError"): ResultTimeoutError,
    ("resultstore", "WorkerLostError"): WorkerLostError,
    ("celery.exceptions", "TaskRevokedError"): TaskRevokedError,
    ("billiard.exceptions", "WorkerLostError"): WorkerLostError,
}
# Stored under Celery's names, so that a Celery client rebuilds its own class.
_WIRE_NAMES: dict[type[BaseException], tuple[str, str]] = {
    TaskRevokedError: ("celery.exceptions", "TaskRevokedError"),
    WorkerLostError: ("billiard.exceptions", "WorkerLostError"),
}


def exception_to_dict(exc: BaseException, encode: Callable[[Any], object]) -> dict[str, Any]:
    """Celery's ``prepare_exception`` for non-pickle serializers.

    Arguments that the serializer cannot encode are stored as their ``repr``
    so that a failure is never lost to an unserializable argument.
    """
    cls = type(exc)
    args = []
    for arg in exc.args:
        try:
            encode(arg)
        except EncodeError:
            arg = repr(arg)
        args.append(arg)
    module, name = _WIRE_NAMES.get(cls, (cls.__module__, cls.__qualname__))
    return {"exc_type": name, "exc_message": args, "exc_module": module}


class ExceptionRebuilder:
    """Turns stored exception dicts back into exceptions, under an allow list."""

    def __init__(self, allowed: Iterable[type[BaseException]] = ()) -> None:
        self._allowed = dict(_KNOWN)
        for cls in allowed:
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise TypeError(f"result_exception_allow takes exception classes, got {cls!r}")
            self._allowed[(cls.__module__, cls.__qualname__)] = cls

    def rebuild(self, stored: object, traceback: str | None) -> BaseException:
        if isinstance(stored, BaseException):  # pickle, when the user opted in
            return stored
        if not isinstance(stored, Mapping) or not isinstance(stored.get("exc_type"), str):
            return RemoteError("UnknownError", None, (repr(stored),), traceback)
        name = stored["exc_type"]
        module = stored.get("exc_module")
        raw_args = stored.get("exc_message", ())
        args = tuple(raw_args) if isinstance(raw_args, (list, tuple)) else (raw_args,)
        cls = self._find(module, name)
        if cls is not None:
            try:
                return cls(*args)
            except Exception:
                pass
        return RemoteError(name, module, args, traceback)

    def _find(self, module: object, name: str) -> type[BaseException] | None:
        if module == "builtins":
            # Only Exception subclasses: stored data must not make get() raise
            # SystemExit, KeyboardInterrupt or GeneratorExit past `except Exception`.
            cls = getattr(builtins, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                return cls
            return None
        if isinstance(module, str):
            return self._allowed.get((module, name))
        return None
