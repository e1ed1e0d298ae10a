-- Functions shared by apply_events.lua and replace_profile.lua (each script is this file
-- followed by its own body).
--
-- One user's keys, in this order: recent (zset), items (hash), cats (hash), counts (hash),
-- meta (hash), log (list), answers (hash: recommendations made from this profile, deleted by
-- every change of it). All share the user's hash tag.
--
-- An event is the array [item_id, type, weight, epoch_seconds, recent_member, [category, ...]].
--
-- Decayed scores are stored relative to an anchor time: score * 2^((t - anchor) / half_life).
-- Reading multiplies by 2^((anchor - now) / half_life). When a new event would push the
-- exponent past 64 the stored values are rescaled and the anchor moves, which keeps the
-- numbers finite for any time span without touching every field on every event.
--
-- An event whose recent-list member is already in ``recent`` counts in the profile already and
-- is skipped: a retried update, or a live update arriving after a rebuild from the database
-- that read its event (the member is the same bytes either way). Only events among the newest
-- ``recent_cap`` are recognised so.
--
-- While a profile is rebuilt from the database (see ProfileRebuilder.rebuild_users), ``log``
-- exists and every event applied live is appended to it, so the rebuild can apply again those
-- its database read did not see.

local function rescale(key, factor)
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    redis.call('HSET', key, flat[i], string.format('%.17g', tonumber(flat[i + 1]) * factor))
  end
end

local function apply(keys, half_life, cap, events)
  local recent, items, cats, counts, meta = keys[1], keys[2], keys[3], keys[4], keys[5]
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
    if last == nil or ts > last then
      last = ts
    end
  end

  -- ``recent`` holds at most one member per event counted: no trimming before it can be over.
  if tonumber(count) > cap then
    redis.call('ZREMRANGEBYRANK', recent, 0, -(cap + 1))
  end
  if anchor_moved then
    redis.call('HSET', meta, 'anchor', string.format('%.17g', anchor),
      'last_event_at', string.format('%.17g', last), 'events', count)
  else
    redis.call('HSET', meta, 'last_event_at', string.format('%.17g', last), 'events', count)
  end
  return #events
end

-- The events not counted yet: those whose member was not in ``recent``, where it is now added
-- (``apply`` counts them next, in the same script).
local function uncounted(recent, events)
  local kept = {}
  for i = 1, #events do
    if redis.call('ZADD', recent, 'NX', events[i][4], events[i][5]) == 1 then
      kept[#kept + 1] = events[i]
    end
  end
  return kept
end
