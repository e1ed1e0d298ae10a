-- Replace one user's live profile with one built from the database, atomically.
--
-- KEYS: the user's four keys of profile_functions.lua.
-- ARGV: half_life_seconds, recent_cap, then one JSON object: the built profile
--       {"profile": {field: value}, "recent": [[epoch, member], ...]}, its fields those of
--       profile_functions.lua (item scores as ``item:<item_id>``).
--
-- The events applied live since the rebuild opened ``log`` that the built profile does not
-- count (the database read did not see them) are applied again on top; then ``log`` is closed.
local half_life = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local built = cjson.decode(ARGV[3])
local recent, profile, log, answers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function hash_fields(map)
  local flat = {}
  for field, value in pairs(map) do
    flat[#flat + 1] = field
    flat[#flat + 1] = value
  end
  return flat
end

redis.call('DEL', recent, profile, answers)
in_chunks('HSET', profile, hash_fields(built['profile']))
local members = {}
for i = 1, #built['recent'] do
  members[#members + 1] = built['recent'][i][1]
  members[#members + 1] = built['recent'][i][2]
end
-- Pairs of (score, member): an even chunk size keeps them together.
in_chunks('ZADD', recent, members)

local logged = redis.call('LRANGE', log, 0, -1)
redis.call('DEL', log)
local missed = {}
for i = 1, #logged do
  if #logged[i] > 0 then
    missed[#missed + 1] = cmsgpack.unpack(logged[i])
  end
end
missed = uncounted(recent, missed)
if #missed > 0 then
  apply(recent, profile, answers, half_life, cap, missed)
end
return #missed
