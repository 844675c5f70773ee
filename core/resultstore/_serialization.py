"""Encoding through kombu's serializer registry, with the accept list on every read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kombu import exceptions as kombu_errors
from kombu import serialization
from kombu.utils import json as kombu_json

from ._errors import DecodeError, EncodeError

DEFAULT_SERIALIZER = "json"
DEFAULT_ACCEPT = ("json",)
_PICKLE_TYPE = "application/x-python-serialize"
_PICKLE_MAGIC = b"\x80"  # the PROTO opcode that starts every pickle of protocol 2 or newer
# The hot path for JSON: kombu's own encoder class and object hook (so the bytes and
# the decoded values are exactly kombu's), without building them anew on every call.
_JSON_ENCODER = kombu_json.JSONEncoder()


def _object_hook(obj: dict[str, Any]) -> Any:
    # kombu's hook builds a set per dict to look for its type markers; most dicts have none.
    return kombu_json.object_hook(obj) if "__type__" in obj else obj


_JSON_DECODER = json.JSONDecoder(object_hook=_object_hook)


@dataclass(frozen=True)
class Codec:
    """One serializer for writing, plus the content types accepted when reading.

    Reads always pass the accept list to kombu, so a payload of a type not
    listed (pickle, unless the user adds it) is refused before it is decoded.
    """

    serializer: str
    content_type: str
    content_encoding: str
    accept: frozenset[str]

    @classmethod
    def create(
        cls, serializer: str = DEFAULT_SERIALIZER, accept: Iterable[str] | None = None
    ) -> Codec:
        names = serialization.registry.name_to_type
        if not isinstance(serializer, str) or serializer not in names:
            raise ValueError(
                f"result_serializer {serializer!r} is not registered with kombu; "
                f"choose one of {sorted(names)}"
            )
        if isinstance(accept, str):
            raise TypeError("result_accept_content must be a list of names, not a str")
        accept_names = list(DEFAULT_ACCEPT if accept is None else accept)
        try:
            accept_types = frozenset(serialization.prepare_accept_content(accept_names))
        except kombu_errors.SerializerNotInstalled as exc:
            raise ValueError(f"result_accept_content: {exc}") from None
        content_type = names[serializer]
        if content_type not in accept_types:
            raise ValueError(
                f"result_serializer {serializer!r} is not in result_accept_content "
                f"{sorted(accept_names)}: results stored with it could not be read back"
            )
        _, encoding, _ = serialization.dumps(None, serializer=serializer)
        return cls(serializer, content_type, encoding, accept_types)

    def dumps(self, value: Any, what: str) -> bytes:
        """Serialize ``value``; ``what`` names it in the error (e.g. "result of task 'x'")."""
        if self.serializer == "json":
            try:
                return _JSON_ENCODER.encode(value).encode()
            except (TypeError, ValueError, RecursionError) as exc:
                raise EncodeError(f"{what} cannot be serialized with 'json': {exc}") from exc
        try:
            _, _, payload = serialization.dumps(value, serializer=self.serializer)
        except (kombu_errors.EncodeError, RecursionError) as exc:
            raise EncodeError(
                f"{what} cannot be serialized with {self.serializer!r}: {exc}"
            ) from exc
        if isinstance(payload, str):
            return payload.encode(self.content_encoding)
        return bytes(payload)

    def loads(self, data: bytes, what: str) -> Any:
        if not data:
            raise DecodeError(f"{what} is empty")
        content_type, encoding = self.content_type, self.content_encoding
        if self.serializer == "json" and data[:1] == _PICKLE_MAGIC:
            # JSON never starts with this byte: it is pickle (e.g. a row Celery once
            # pickled). Decode it as such only if the user accepts pickle.
            if _PICKLE_TYPE not in self.accept:
                raise DecodeError(
                    f"{what} refused: it is pickle data and 'pickle' is not in "
                    "result_accept_content"
                )
            content_type, encoding = _PICKLE_TYPE, "binary"
        if content_type == "application/json":
            try:
                return _JSON_DECODER.decode(bytes(data).decode())
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
                raise DecodeError(f"{what} cannot be decoded as 'json': {exc}") from exc
            except RecursionError:
                raise DecodeError(f"{what} is nested too deeply to decode as 'json'") from None
        try:
            return serialization.loads(data, content_type, encoding, accept=self.accept)
        except kombu_errors.ContentDisallowed as exc:
            raise DecodeError(f"{what} refused: {exc}") from None
        except kombu_errors.DecodeError as exc:
            raise DecodeError(f"{what} cannot be decoded as {self.serializer!r}: {exc}") from exc
        except RecursionError:
            raise DecodeError(
                f"{what} is nested too deeply to decode as {self.serializer!r}"
            ) from None
