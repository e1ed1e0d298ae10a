-- Apply users' new events to their live profiles, atomically.
--
-- ARGV: half_life_seconds, recent_cap, then one JSON array with, per user, the pair
--       [key prefix, array of that user's events]. A user's keys (those of
--       profile_functions.lua) are the prefix, which holds the user's hash tag, followed by
--       'recent', 'profile', 'rebuild-log' and 'answers' (app.profiles.user_keys).
-- KEYS: on Redis Cluster, where a call takes one user, that user's four keys, which route the
--       call to their slot; on a standalone Redis, where a call takes many users, none: four
--       names per user would cost more to send than the rest of the call.
local half_life = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local users = cjson.decode(ARGV[3])

local applied = 0
for u = 1, #users do
  local prefix = users[u][1]
  local recent = prefix .. 'recent'
  local events = uncounted(recent, users[u][2])
  if #events > 0 then
    if apply(recent, prefix .. 'profile', prefix .. 'answers', half_life, cap, events) then
      local log = prefix .. 'rebuild-log'
      if redis.call('EXISTS', log) == 1 then
        for i = 1, #events do
          redis.call('RPUSH', log, cmsgpack.pack(events[i]))
        end
      end
    end
    applied = applied + #events
  end
end
return applied
