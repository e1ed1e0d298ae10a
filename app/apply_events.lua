-- Apply one user's new events to their live profile, atomically.
--
-- KEYS: recent (zset), items (hash), categories (hash), counts (hash), meta (hash);
--       all share the user's hash tag, so this runs on Redis Cluster too.
-- ARGV: half_life_seconds, recent_cap, n_events, then per event:
--       item_id, type, weight, epoch_seconds, recent_member, n_categories, category...
--
-- Decayed scores are stored relative to an anchor time: score * 2^((t - anchor) / half_life).
-- Reading multiplies by 2^((anchor - now) / half_life). When a new event would push the
-- exponent past 64 the stored values are rescaled and the anchor moves, which keeps the
-- numbers finite for any time span without touching every field on every event.
local recent, items, cats, counts, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local half_life = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local n = tonumber(ARGV[3])

local anchor = tonumber(redis.call('HGET', meta, 'anchor'))
local last = tonumber(redis.call('HGET', meta, 'last_event_at'))

local function rescale(key, factor)
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    redis.call('HSET', key, flat[i], string.format('%.17g', tonumber(flat[i + 1]) * factor))
  end
end

local pos = 4
for _ = 1, n do
  local item = ARGV[pos]
  local etype = ARGV[pos + 1]
  local weight = tonumber(ARGV[pos + 2])
  local ts = tonumber(ARGV[pos + 3])
  local member = ARGV[pos + 4]
  local ncats = tonumber(ARGV[pos + 5])

  if anchor == nil then
    anchor = ts
    redis.call('HSET', meta, 'anchor', string.format('%.17g', anchor))
  end
  local exponent = (ts - anchor) / half_life
  if exponent > 64 then
    local factor = 2 ^ (-exponent)
    rescale(items, factor)
    rescale(cats, factor)
    anchor = ts
    exponent = 0
    redis.call('HSET', meta, 'anchor', string.format('%.17g', anchor))
  end
  local contribution = weight * 2 ^ exponent
  redis.call('HINCRBYFLOAT', items, item, string.format('%.17g', contribution))
  for c = 1, ncats do
    redis.call('HINCRBYFLOAT', cats, ARGV[pos + 5 + c], string.format('%.17g', contribution))
  end
  redis.call('HINCRBY', counts, etype, 1)
  redis.call('ZADD', recent, ts, member)
  if last == nil or ts > last then
    last = ts
  end
  pos = pos + 6 + ncats
end

redis.call('ZREMRANGEBYRANK', recent, 0, -(cap + 1))
redis.call('HSET', meta, 'last_event_at', string.format('%.17g', last))
redis.call('HINCRBY', meta, 'events', n)
return n
