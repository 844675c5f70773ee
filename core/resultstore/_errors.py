"""The exceptions resultstore raises. All derive from :class:`ResultStoreError`."""

from __future__ import annotations

import builtins


class ResultStoreError(Exception):
    """Base class of every error raised by resultstore itself."""


class InvalidURL(ResultStoreError, ValueError):
    """A backend URL that cannot be parsed."""


class BackendNotFound(ResultStoreError, LookupError):
    """No plugin serves the URL's scheme."""


class AmbiguousBackend(ResultStoreError, LookupError):
    """Two installed distributions publish the same scheme."""


class BackendLoadError(ResultStoreError, ImportError):
    """A plugin was found but failed to import or to start."""


class PluginValidationError(ResultStoreError, TypeError):
    """A plugin does not follow the hook contract."""


class BackendUnavailable(ResultStoreError, ConnectionError):
    """The storage engine could not be reached, after the plugin's bounded retries."""


class UnsupportedOperation(ResultStoreError):
    """The backend's plugin lacks the capability an operation needs."""


class EncodeError(ResultStoreError, ValueError):
    """A value could not be serialized for storage (nothing was stored)."""


class DecodeError(ResultStoreError, ValueError):
    """Stored bytes could not be decoded, or their content type is not accepted."""


class TimeoutError(ResultStoreError, builtins.TimeoutError):
    """A wait reached its deadline before the task was ready."""


class TaskRevokedError(ResultStoreError):
    """The task was revoked (stored as the result of a REVOKED task)."""


class WorkerLostError(ResultStoreError):
    """The task's run ended before it could finish: interrupted, or its process died."""


class RemoteError(ResultStoreError):
    """A task failure whose exception class is not allowed to be rebuilt here.

    It keeps what was stored: the type name, the module, the arguments and the
    remote traceback text.
    """

    def __init__(
        self, exc_type: str, exc_module: str | None, args: tuple[object, ...], traceback: str | None
    ) -> None:
        super().__init__(*args)
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.traceback = traceback

    def __reduce__(self) -> tuple[type[RemoteError], tuple[object, ...]]:
        return (type(self), (self.exc_type, self.exc_module, self.args, self.traceback))

    @property
    def qualified_name(self) -> str:
        return f"{self.exc_module}.{self.exc_type}" if self.exc_module else self.exc_type

    def __str__(self) -> str:
        message = ", ".join(str(a) for a in self.args)
        return f"{self.qualified_name}: {message}" if message else self.qualified_name


class RemoteTraceback(Exception):
    """Carries a traceback formatted in another process, so that it prints as a cause."""

    def __init__(self, traceback: str) -> None:
        super().__init__(traceback)
        self.traceback = traceback

    def __str__(self) -> str:
        return f"\n\nRemote traceback:\n{self.traceback.rstrip()}"
