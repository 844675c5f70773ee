"""A misspelt Redis scheme behind a known prefix gets the close one and the valid list."""

from __future__ import annotations

import pytest

from resultstore import Backend

SCHEMES = "redis, redis+cluster, redis+socket, rediss, sentinel, unix"


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("redis+sentinal://h:26379", "sentinel"),
        ("redis+clustr://:secret@h:7000", "redis+cluster"),
        ("redis+sockt:///tmp/r.sock", "redis+socket"),
    ],
)
def test_a_misspelt_redis_scheme_gets_the_close_one_and_the_list(url: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match="does not serve scheme") as caught:
        Backend(url)
    scheme = url.partition("://")[0]
    masked = url.replace(":secret@", ":****@")
    assert str(caught.value) == (
        f"resultstore-redis does not serve scheme {scheme!r} ({masked!r}); "
        f"did you mean {suggestion!r}? its schemes: {SCHEMES}"
    )
