"""Server-side scripts: the check and the write happen in one atomic step."""

# KEYS[1] the task key (also the pub/sub channel, as in Celery)
# ARGV[1] the encoded meta, ARGV[2] TTL in ms ('0': none), ARGV[3] '1' to overwrite
# a ready state, ARGV[4] the decoder for the stored value ('json' or 'msgpack').
# Returns 1 when written and published, 0 when a ready state was kept.
STORE = """
if ARGV[3] ~= '1' then
  local current = redis.call('GET', KEYS[1])
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
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

SCRIPT_DECODERS = ("json", "msgpack")
