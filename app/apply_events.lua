-- Apply users' new events to their live profiles, atomically.
--
-- KEYS: per user, five keys: recent (zset), items (hash), categories (hash), counts (hash),
--       meta (hash). One user's keys share the user's hash tag, so a call for one user runs on
--       Redis Cluster too; a call for several users needs a standalone Redis.
-- ARGV: half_life_seconds, recent_cap, then one JSON array with, per user (in KEYS order), the
--       array of that user's events, each [item_id, type, weight, epoch_seconds, recent_member,
--       [category, ...]].
--
-- Decayed scores are stored relative to an anchor time: score * 2^((t - anchor) / half_life).
-- Reading multiplies by 2^((anchor - now) / half_life). When a new event would push the
-- exponent past 64 the stored values are rescaled and the anchor moves, which keeps the
-- numbers finite for any time span without touching every field on every event.
local half_life = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local users = cjson.decode(ARGV[3])

local function rescale(key, factor)
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    redis.call('HSET', key, flat[i], string.format('%.17g', tonumber(flat[i + 1]) * factor))
  end
end

local function apply(recent, items, cats, counts, meta, events)
  local state = redis.call('HMGET', meta, 'anchor', 'last_event_at', 'events')
  local anchor = tonumber(state[1])
  local last = tonumber(state[2])
  local count = string.format('%d', (tonumber(state[3]) or 0) + #events)
  local anchor_moved = false

  for i = 1, #events do
    local event = events[i]
    local item, etype, weight, ts, member, categories =
      event[1], event[2], event[3], event[4], event[5], event[6]

    if anchor == nil then
      anchor = ts
      anchor_moved = true
    end
    local exponent = (ts - anchor) / half_life
    if exponent > 64 then
      local factor = 2 ^ (-exponent)
      rescale(items, factor)
      rescale(cats, factor)
      anchor = ts
      exponent = 0
      anchor_moved = true
    end
    local contribution = string.format('%.17g', weight * 2 ^ exponent)
    redis.call('HINCRBYFLOAT', items, item, contribution)
    for c = 1, #categories do
      redis.call('HINCRBYFLOAT', cats, categories[c], contribution)
    end
    redis.call('HINCRBY', counts, etype, 1)
    redis.call('ZADD', recent, ts, member)
    if last == nil or ts > last then
      last = ts
    end
  end

  redis.call('ZREMRANGEBYRANK', recent, 0, -(cap + 1))
  if anchor_moved then
    redis.call('HSET', meta, 'anchor', string.format('%.17g', anchor),
      'last_event_at', string.format('%.17g', last), 'events', count)
  else
    redis.call('HSET', meta, 'last_event_at', string.format('%.17g', last), 'events', count)
  end
  return #events
end

local applied = 0
for u = 1, #users do
  local k = (u - 1) * 5
  applied = applied + apply(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], users[u])
end
return applied
