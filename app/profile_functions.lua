-- Functions shared by apply_events.lua and replace_profile.lua (each script is this file
-- followed by its own body).
--
-- One user's keys, in this order: recent (zset), profile (hash), log (list), answers (hash:
-- recommendations made from this profile, deleted by a change of it while ``profile`` says
-- lists are kept). All share the user's hash tag.
--
-- ``profile`` holds the item scores, ``item:<item_id>``, and beside them the decay anchor, the
-- last event time, the number of events and, per event type, ``count:<type>``: one read and one
-- write of it per user and call, whatever the events. While a rebuild runs it also holds
-- ``rebuilding`` (see below), which the next replacement of the profile drops. ``kept`` is 1
-- once lists were stored in ``answers`` (app/serving/answers.py): an update deletes ``answers``
-- only then, and clears it.
--
-- An event is the array [item_id, type, weight, epoch_seconds, recent_member]; epoch_seconds
-- comes as text (Python's repr of the float), which is what ``recent`` and ``profile`` store,
-- so that the script need not format it again (events logged by older versions carry a
-- number).
--
-- Decayed scores are stored relative to an anchor time: score * 2^((t - anchor) / half_life).
-- Reading multiplies by 2^((anchor - now) / half_life). When a new event would push the
-- exponent past 64 the stored scores are rescaled and the anchor moves, which keeps the
-- numbers finite for any time span without touching every field on every event.
--
-- An event whose recent-list member is already in ``recent`` counts in the profile already and
-- is skipped: a retried update, or a live update arriving after a rebuild from the database
-- that read its event (the member is the same bytes either way). Only events among the newest
-- ``recent_cap`` are recognised so.
--
-- While a profile is rebuilt from the database (see ProfileRebuilder.rebuild_users), ``log``
-- exists and every event applied live is appended to it, so the rebuild can apply again those
-- its database read did not see. ``profile``'s ``rebuilding`` field says to look for ``log``:
-- the read of ``profile`` answers that for nothing on every other update.

-- A timestamp as stored: the text it came as, or a number formatted exactly.
local function as_text(epoch)
  if type(epoch) == 'string' then
    return epoch
  end
  return string.format('%.17g', epoch)
end

-- Redis commands take their arguments from the Lua stack, which holds a few thousand: ``flat``
-- goes to ``command`` a thousand at a time (an even number, which keeps pairs together). Answers
-- the command's reply, or, when it took parts, their array replies joined (HMGET's values).
-- ``count``: how many of ``flat``'s values to send, when the table has room beyond them.
local function in_chunks(command, key, flat, count)
  local n = count or #flat
  if n <= 1000 then
    if n == 0 then
      return {}
    end
    return redis.call(command, key, unpack(flat, 1, n))
  end
  local joined = {}
  for start = 1, n, 1000 do
    local reply = redis.call(command, key, unpack(flat, start, math.min(start + 999, n)))
    if type(reply) == 'table' then
      for i = 1, #reply do
        joined[#joined + 1] = reply[i]
      end
    end
  end
  return joined
end

-- Multiplies every item score of ``profile`` by ``factor``.
local function rescale(profile, factor)
  local flat = redis.call('HGETALL', profile)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 5) == 'item:' then
      redis.call('HSET', profile, flat[i], string.format('%.17g', tonumber(flat[i + 1]) * factor))
    end
  end
end

-- Puts in ``fields``, after its first ``n`` values, the field named ``prefix`` .. value for each
-- distinct value of the events' ``column``; answers each value's index in ``fields``, and the
-- number of values ``fields`` holds now.
local function add_fields(fields, n, events, column, prefix)
  local slots = {}
  for i = 1, #events do
    local value = events[i][column]
    if slots[value] == nil then
      n = n + 1
      fields[n] = prefix .. value
      slots[value] = n
    end
  end
  return slots, n
end

-- Counts ``events`` in the profile (``recent``, ``profile`` and ``answers``, the user's keys);
-- answers whether a rebuild of it may be running.
--
-- Most calls bring a user one event. Tables built by a constructor get their size once, so the
-- tables below are made with room for what one event needs; a table that grows one value at a
-- time is reallocated at every power of two, and that showed in Redis's CPU.
local function apply(recent, profile, answers, half_life, cap, events)
  -- The fields to read: five scalars, then from ``first`` the count of each type and from
  -- ``scores`` the score of each item among the events, ``last_field`` of them in all.
  -- ``count_slot``, ``score_slot``: the index of a type's count and of an item's score.
  local first = 6
  local fields = {'anchor', 'last_event_at', 'events', 'rebuilding', 'kept', false, false}
  local count_slot, score_slot, scores, last_field
  if #events == 1 then
    local item, event_type = events[1][1], events[1][2]
    fields[6], fields[7] = 'count:' .. event_type, 'item:' .. item
    count_slot, score_slot, scores, last_field = {[event_type] = 6}, {[item] = 7}, 7, 7
  else
    count_slot, last_field = add_fields(fields, 5, events, 2, 'count:')
    scores = last_field + 1
    score_slot, last_field = add_fields(fields, last_field, events, 1, 'item:')
  end
  local state = in_chunks('HMGET', profile, fields, last_field)
  local anchor = tonumber(state[1])
  local last = tonumber(state[2])
  local total = (tonumber(state[3]) or 0) + #events
  local values = {0, 0, 0, 0, 0, 0, 0}
  for f = first, last_field do
    values[f] = tonumber(state[f]) or 0
  end
  -- The anchor's and the last event time's new texts, when they change.
  local anchor_text, last_text

  for i = 1, #events do
    local event = events[i]
    local ts = tonumber(event[4])

    if anchor == nil then
      anchor, anchor_text = ts, event[4]
    end
    local exponent = (ts - anchor) / half_life
    if exponent > 64 then
      local factor = 2 ^ (-exponent)
      rescale(profile, factor)
      for f = scores, last_field do
        values[f] = values[f] * factor
      end
      anchor, anchor_text = ts, event[4]
      exponent = 0
    end
    local f = score_slot[event[1]]
    values[f] = values[f] + event[3] * 2 ^ exponent
    f = count_slot[event[2]]
    values[f] = values[f] + 1
    if last == nil or ts > last then
      last, last_text = ts, event[4]
    end
  end

  -- ``recent`` holds at most one member per event counted: no trimming before it can be over.
  if total > cap then
    redis.call('ZREMRANGEBYRANK', recent, 0, -(cap + 1))
  end
  -- Field and value pairs, ``w`` values so far, in a table with room for those of one event.
  local written = {
    'events', string.format('%d', total), false, false, false, false, false, false, false, false,
    false, false,
  }
  local w = 2
  if state[5] == '1' then
    redis.call('DEL', answers)
    written[w + 1], written[w + 2], w = 'kept', '0', w + 2
  end
  if anchor_text ~= nil then
    written[w + 1], written[w + 2], w = 'anchor', as_text(anchor_text), w + 2
  end
  if last_text ~= nil then
    written[w + 1], written[w + 2], w = 'last_event_at', as_text(last_text), w + 2
  end
  for f = first, scores - 1 do
    written[w + 1], written[w + 2], w = fields[f], string.format('%d', values[f]), w + 2
  end
  for f = scores, last_field do
    written[w + 1], written[w + 2], w = fields[f], string.format('%.17g', values[f]), w + 2
  end
  in_chunks('HSET', profile, written, w)
  return state[4] ~= false
end

-- The events not counted yet: those whose member was not in ``recent``, where it is now added
-- (``apply`` counts them next, in the same script). ``events`` itself when none was counted
-- before, the usual case: a new table only once one is skipped.
local function uncounted(recent, events)
  local kept
  for i = 1, #events do
    local event = events[i]
    if redis.call('ZADD', recent, 'NX', event[4], event[5]) == 1 then
      if kept ~= nil then
        kept[#kept + 1] = event
      end
    elseif kept == nil then
      kept = {}
      for j = 1, i - 1 do
        kept[j] = events[j]
      end
    end
  end
  return kept or events
end
