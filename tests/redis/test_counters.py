"""Redis counters (capability ``counter``): one script, INCRBY and the TTL together.

The conformance suite (test_conformance.py) proves the contract, two processes
incrementing at once included; these tests pin what is on the server.
"""

from __future__ import annotations

import redis

from resultstore import Backend, Capability

from .conftest import transport


def test_an_increment_is_one_integer_key_with_its_ttl(
    redis_url: str, keyprefix: str, server: redis.Redis
) -> None:
    key = f"{keyprefix}resultstore-counter-chord-1"
    with Backend(redis_url, options=transport(keyprefix)) as backend:
        assert Capability.COUNTER in backend.capabilities
        assert backend.incr("chord-1", 1, expires=60) == 1
        assert backend.incr("chord-1", 2, expires=60) == 3
        assert server.get(key) == b"3"  # INCRBY's own integer encoding
        assert 59_000 < server.pttl(key) <= 60_000  # counted again from every increment
        assert backend.incr("chord-1", -1, expires=None) == 2
        assert server.pttl(key) == -1  # None keeps the counter: no expiry left over
        assert backend.forget_counter("chord-1") is True
        assert backend.forget_counter("chord-1") is False
        assert server.exists(key) == 0


def test_an_increment_runs_as_one_script_call(
    redis_url: str, keyprefix: str, server: redis.Redis
) -> None:
    with Backend(redis_url, options=transport(keyprefix)) as backend:
        backend.incr("warm", 1)  # the script is loaded
        before = server.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        assert backend.incr("once", 5, expires=10) == 5
        after = server.info("commandstats")["cmdstat_evalsha"]["calls"]
    # Other tests may use the shared server meanwhile: at least ours, and INCRBY inside it.
    assert after - before >= 1
