"""Server-side scripts of the listing index (``redis_list_index=True``; see _index).

The index changes in the same atomic step as the task key it describes: the store
script writes both, so no reader ever sees a stored result the index does not hold, or
an index entry of a different state than the key's. Key names are built in the script
from ``ix`` (the index keys' prefix) and ``tk`` (the task keys' prefix), so the index
cannot serve Redis Cluster (its keys are in other hash slots than the task key's).

Arguments shared by the index steps: ``id`` the task id, ``state`` its new state,
``score`` its listing score ('+inf' while unfinished, else date_done in seconds since
the epoch), ``ix`` and ``tk`` as above, ``ttl`` the key's TTL in ms (0: none).
"""

from ._scripts import STORE_GUARD, STORE_WRITE

# Work a store does for results that expired: at most this many index entries whose
# expiry is due are looked at (each store adds one at most, so this keeps up).
PRUNE_PER_STORE = 8

_FUNCTIONS = f"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function unindex(ix, id)
  local state = redis.call('HGET', ix .. 'state-of', id)
  if state then
    redis.call('ZREM', ix .. 'by-state-' .. state, id)
    redis.call('HDEL', ix .. 'state-of', id)
  end
  redis.call('ZREM', ix .. 'expiry', id)
end

-- Entries whose expiry is due and whose key is gone. An expiry is never before its
-- key's own; the key's existence decides (a key still there a millisecond early is
-- kept for the next round).
local function prune_due(ix, tk, now, limit)
  local cutoff = string.format('%.0f', now + 1)
  local due = redis.call('ZRANGEBYSCORE', ix .. 'expiry', '-inf', cutoff, 'LIMIT', 0, limit)
  local removed = 0
  for _, id in ipairs(due) do
    if redis.call('EXISTS', tk .. id) == 0 then
      unindex(ix, id)
      removed = removed + 1
    end
  end
  return {{#due, removed}}
end

local function index(id, state, score, ix, tk, ttl)
  local old = redis.call('HGET', ix .. 'state-of', id)
  if old ~= state then
    if old then redis.call('ZREM', ix .. 'by-state-' .. old, id) end
    redis.call('HSET', ix .. 'state-of', id, state)
    redis.call('SADD', ix .. 'states', state)
  end
  redis.call('ZADD', ix .. 'by-state-' .. state, score, id)
  -- The clock is read after the key's write: the key expires no later than this says.
  local now = now_ms()
  if ttl > 0 then
    redis.call('ZADD', ix .. 'expiry', string.format('%.0f', now + ttl), id)
  else
    redis.call('ZREM', ix .. 'expiry', id)
  end
  prune_due(ix, tk, now, {PRUNE_PER_STORE})
end
"""

# _scripts.STORE, then the index: ARGV[1..5] as there, ARGV[6..10] id, state, score,
# ix, tk (the store's TTL is ARGV[2]). A retry after a lost reply returns at the guard:
# the first run wrote the index with the key.
STORE_INDEXED = (
    _FUNCTIONS
    + STORE_GUARD
    + STORE_WRITE
    + "index(ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[2]))\nreturn 1\n"
)

# The index step alone, queued inside the WATCH path's MULTI after its SET (serializers
# the store script cannot read): ARGV[1] ttl, ARGV[2..6] id, state, score, ix, tk.
INDEX = _FUNCTIONS + "index(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[1]))\n"

# KEYS[1] the task key, KEYS[2] its revoked key; ARGV[1] id, ARGV[2] ix.
# Returns how many task keys were deleted (0 or 1).
FORGET_INDEXED = (
    _FUNCTIONS
    + """
local deleted = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
unindex(ARGV[2], ARGV[1])
return deleted
"""
)

# ARGV[1] ix, ARGV[2] tk, ARGV[3] how many due expiries to look at (0: none), ARGV[4..]
# ids a listing met without a key (deleted behind resultstore's back, or expired).
# Returns {due entries looked at, entries removed}.
PRUNE = (
    _FUNCTIONS
    + """
local result = {0, 0}
if tonumber(ARGV[3]) > 0 then
  result = prune_due(ARGV[1], ARGV[2], now_ms(), tonumber(ARGV[3]))
end
for i = 4, #ARGV do
  if redis.call('EXISTS', ARGV[2] .. ARGV[i]) == 0 then
    unindex(ARGV[1], ARGV[i])
    result[2] = result[2] + 1
  end
end
return result
"""
)

# An entry a listing found in another state or place than its key's: the key was written
# without the index (a writer without redis_list_index, Celery itself). Indexed anew
# from what the listing read, if the key still holds exactly that (its SHA-1).
# ARGV[1] ix, ARGV[2] tk, ARGV[3] id, ARGV[4] the SHA-1 of the bytes read, ARGV[5]
# state, ARGV[6] score. Returns 1 when indexed anew, 0 when the key changed since.
REINDEX = (
    _FUNCTIONS
    + """
local key = ARGV[2] .. ARGV[3]
local current = redis.call('GET', key)
if not current or redis.sha1hex(current) ~= ARGV[4] then return 0 end
local ttl = redis.call('PTTL', key)
if ttl < 0 then ttl = 0 end
index(ARGV[3], ARGV[5], ARGV[6], ARGV[1], ARGV[2], ttl)
return 1
"""
)
