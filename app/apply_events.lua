-- Apply users' new events to their live profiles, atomically.
--
-- KEYS: per user, the five keys of profile_functions.lua. One user's keys share the user's
--       hash tag, so a call for one user runs on Redis Cluster too; a call for several users
--       needs a standalone Redis.
-- ARGV: half_life_seconds, recent_cap, then one JSON array with, per user (in KEYS order), the
--       array of that user's events.
local half_life = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local users = cjson.decode(ARGV[3])

local applied = 0
for u = 1, #users do
  local k = (u - 1) * 5
  local recent, log = KEYS[k + 1], KEYS[k + 4]
  local events = uncounted(recent, users[u])
  if #events > 0 then
    if apply(recent, KEYS[k + 2], KEYS[k + 3], KEYS[k + 5], half_life, cap, events)
        and redis.call('EXISTS', log) == 1 then
      for i = 1, #events do
        redis.call('RPUSH', log, cmsgpack.pack(events[i]))
      end
    end
    applied = applied + #events
  end
end
return applied
