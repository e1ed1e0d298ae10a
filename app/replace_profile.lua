-- Replace one user's live profile with one built from the database, atomically.
--
-- KEYS: the user's five keys of profile_functions.lua.
-- ARGV: half_life_seconds, recent_cap, then one JSON object: the built profile
--       {"items": {item: score}, "meta": {field: value}, "recent": [[epoch, member], ...]}.
--
-- The events applied live since the rebuild opened ``log`` that the built profile does not
-- count (the database read did not see them) are applied again on top; then ``log`` is closed.
local half_life = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local built = cjson.decode(ARGV[3])
local keys = {KEYS[1], KEYS[2], KEYS[3], KEYS[5]}
local log = KEYS[4]

-- Redis commands take their arguments from the Lua stack: a few thousand at a time.
local function in_chunks(command, key, flat)
  for start = 1, #flat, 1000 do
    local stop = math.min(start + 999, #flat)
    redis.call(command, key, unpack(flat, start, stop))
  end
end

local function hash_fields(map)
  local flat = {}
  for field, value in pairs(map) do
    flat[#flat + 1] = field
    flat[#flat + 1] = value
  end
  return flat
end

redis.call('DEL', keys[1], keys[2], keys[3], KEYS[5])
in_chunks('HSET', keys[2], hash_fields(built['items']))
in_chunks('HSET', keys[3], hash_fields(built['meta']))
local recent = {}
for i = 1, #built['recent'] do
  recent[#recent + 1] = built['recent'][i][1]
  recent[#recent + 1] = built['recent'][i][2]
end
-- Pairs of (score, member): an even chunk size keeps them together.
in_chunks('ZADD', keys[1], recent)

local logged = redis.call('LRANGE', log, 0, -1)
redis.call('DEL', log)
local missed = {}
for i = 1, #logged do
  if #logged[i] > 0 then
    missed[#missed + 1] = cmsgpack.unpack(logged[i])
  end
end
missed = uncounted(keys[1], missed)
if #missed > 0 then
  apply(keys[1], keys[2], keys[3], keys[4], half_life, cap, missed)
end
return #missed
