"""Server-side scripts: the check and the write happen in one atomic step."""

# KEYS[1] the task key (also the pub/sub channel, as in Celery)
# ARGV[1] the encoded meta, ARGV[2] TTL in ms ('0': none), ARGV[3] '1' to overwrite
# a ready state, ARGV[4] the decoder for the stored value ('json' or 'msgpack'),
# ARGV[5] '1' to publish an empty message instead of the meta (too big to publish:
# subscribers read the key).
# Returns 1 when written and published, 0 when a ready state was kept.
#
# The stored bytes being exactly ARGV[1] means this very store ran already: its reply
# was lost and the client retried it. That is success (it was written and published
# then), not a ready state to keep; the meta's date_done makes two different stores'
# bytes differ. (An overwrite just writes and publishes again.)
#
# In two parts: the store that also keeps the listing index runs the same guard and
# write (_index_scripts.STORE_INDEXED).
STORE_GUARD = """
if ARGV[3] ~= '1' then
  local current = redis.call('GET', KEYS[1])
  if current == ARGV[1] then
    return 1
  end
  if current then
    local decode = cjson.decode
    if ARGV[4] == 'msgpack' then decode = cmsgpack.unpack end
    local ok, meta = pcall(decode, current)
    if ok and type(meta) == 'table' then
      local status = meta['status']
      if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED' then
        return 0
      end
    end
  end
end
"""
STORE_WRITE = """
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if ARGV[5] == '1' then
  redis.call('PUBLISH', KEYS[1], '')
else
  redis.call('PUBLISH', KEYS[1], ARGV[1])
end
"""
STORE = STORE_GUARD + STORE_WRITE + "return 1\n"

# KEYS[1] the counter's key, ARGV[1] the amount, ARGV[2] TTL in ms ('0': none).
# Returns the new value. Without a TTL the counter is kept (PERSIST drops an earlier
# one), as the hook's contract and the db plugin have it.
INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

SCRIPT_DECODERS = ("json", "msgpack")
