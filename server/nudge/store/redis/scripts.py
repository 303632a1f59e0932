"""Every Lua script of the Redis store, each headed by the keys and arguments it takes and what it
returns; :class:`nudge.store.redis.RedisStore` and :class:`nudge.store.redis.cluster.RedisCluster`
register each once. Every read-modify-write two nodes could race on is one of these.
"""

CLAIM_DUE = """
-- KEYS[1]: pending timers (sorted set: member -> due ms)
-- KEYS[2]: claimed timers (sorted set: "due_ms SEP node SEP member" -> lease end ms)
-- ARGV[1]: now in ms
-- ARGV[2]: most timers to claim
-- ARGV[3]: lease in ms
-- ARGV[4]: SEP
-- ARGV[5]: the claiming node
-- returns a flat list due_ms, member, claim, due_ms, member, claim, ... of the timers now leased
--   to the caller: claims whose lease ran out first (their node died), then timers that fell due
local now, limit, lease, sep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {}
local function lease_to_me(ms, member)
  local claim = ms .. sep .. ARGV[5] .. sep .. member
  redis.call('ZADD', KEYS[2], now + lease, claim)
  out[#out + 1] = ms
  out[#out + 1] = member
  out[#out + 1] = claim
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, entry in ipairs(stale) do
  redis.call('ZREM', KEYS[2], entry)
  local first = string.find(entry, sep, 1, true)
  local second = string.find(entry, sep, first + 1, true)
  lease_to_me(string.sub(entry, 1, first - 1), string.sub(entry, second + 1))
end
local room = limit - #stale
if room > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, room)
  for i = 1, #due, 2 do
    redis.call('ZREM', KEYS[1], due[i])
    lease_to_me(string.format('%d', tonumber(due[i + 1])), due[i])
  end
end
return out
"""

CONFIRM_SHOW = """
-- KEYS[1]: when this campaign was shown to the visitor (sorted set of ms)
-- KEYS[2]: when any campaign was shown to the visitor (sorted set of ms, the last day)
-- KEYS[3]: the once marker of this decision (string; unused when ARGV[6] is "")
-- KEYS[4]: the visitor's queue (list; unused when ARGV[7] is "")
-- KEYS[5]: how many times this campaign was ever shown to the visitor (counter)
-- ARGV[1]: now in ms
-- ARGV[2]: the campaign's caps, "per_day per_week lifetime every_ms history_ms" (-1: none)
-- ARGV[3]: the limits across campaigns, "per_hour per_day" (-1: none)
-- ARGV[4]: cooldown in ms (0: none)
-- ARGV[5]: a member unique to this show
-- ARGV[6]: "1" when KEYS[3] must not exist yet, else ""
-- ARGV[7]: a message to queue (packed [expires_s, message]) or ""
-- ARGV[8]: the queue's length limit; ARGV[9]: the queue's time to live in ms
-- ARGV[10]: the lifetime counter's time to live in ms (the retention setting)
-- returns "" when the show may go ahead (it is counted, and queued if asked), else the reason,
--   checked in the engine's order
local now, day, week, hour = tonumber(ARGV[1]), 86400000, 604800000, 3600000
if ARGV[6] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then return 'duplicate' end
local caps, limits = {}, {}
for n in string.gmatch(ARGV[2], '%S+') do caps[#caps + 1] = tonumber(n) end
for n in string.gmatch(ARGV[3], '%S+') do limits[#limits + 1] = tonumber(n) end
local per_day, per_week, lifetime, every, history = caps[1], caps[2], caps[3], caps[4], caps[5]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - history)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - day)
if lifetime >= 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= lifetime then return 'cap:lifetime' end
if every >= 0 then
  local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #last > 0 and now - tonumber(last[2]) < every then return 'cap:every' end
end
if per_day >= 0 and redis.call('ZCOUNT', KEYS[1], '(' .. (now - day), '+inf') >= per_day then return 'cap:per_day' end
if per_week >= 0 and redis.call('ZCOUNT', KEYS[1], '(' .. (now - week), '+inf') >= per_week then return 'cap:per_week' end
if limits[1] >= 0 and redis.call('ZCOUNT', KEYS[2], '(' .. (now - hour), '+inf') >= limits[1] then return 'limit:per_hour' end
if limits[2] >= 0 and redis.call('ZCARD', KEYS[2]) >= limits[2] then return 'limit:per_day' end
local cooldown = tonumber(ARGV[4])
if cooldown > 0 then
  local last = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #last > 0 and now - tonumber(last[2]) < cooldown then return 'cooldown' end
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], history)
redis.call('PEXPIRE', KEYS[2], day)
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], ARGV[10])
if ARGV[6] ~= '' then redis.call('SET', KEYS[3], '1', 'PX', day) end
if ARGV[7] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[7])
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[8]), -1)
  if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[9]) then redis.call('PEXPIRE', KEYS[4], ARGV[9]) end
end
return ''
"""

ENQUEUE = """
-- KEYS[1]: the visitor's queue (list of packed [expires_s, message])
-- ARGV[1]: the packed entry
-- ARGV[2]: the queue's length limit
-- ARGV[3]: the entry's time to live in ms
-- returns the queue's length
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return redis.call('LLEN', KEYS[1])
"""

TAKE_QUEUED = """
-- KEYS[1]: the visitor's queue
-- returns every entry, oldest first, and empties the queue (so only one node delivers them)
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return entries
"""

HOLD_FOR_USER = """
-- KEYS[1]: the user id's held events (list of packed [expires_s, event])
-- ARGV[1]: the packed entry
-- ARGV[2]: the list's length limit
-- ARGV[3]: the entry's time to live in ms
-- returns the list's length
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return redis.call('LLEN', KEYS[1])
"""

ACK_QUEUED = """
-- KEYS[1]: the visitor's queue
-- ARGV[1..n]: message ids a tab acknowledged
-- returns how many entries were removed
local gone = {}
for i = 1, #ARGV do gone[ARGV[i]] = true end
local removed = 0
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local decoded = cmsgpack.unpack(entry)
  if type(decoded[2]) == 'table' and gone[decoded[2]['id']] then
    removed = removed + redis.call('LREM', KEYS[1], 1, entry)
  end
end
return removed
"""

TAKE_QUEUED_OF = """
-- KEYS[1]: the visitor's queue
-- ARGV[1]: a campaign id
-- returns that campaign's entries, oldest first, removed from the queue (the others stay)
local taken = {}
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local decoded = cmsgpack.unpack(entry)
  if type(decoded[2]) == 'table' and decoded[2]['campaign'] == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, entry)
    taken[#taken + 1] = entry
  end
end
return taken
"""

SAVE_SESSIONS = """
-- KEYS[i]: the sessions (hashes: seq, state, owner, visitor)
-- ARGV[1]: the writing node ("" for none)
-- ARGV[4i-2 .. 4i+1], for KEYS[i]: the packed session state, its last applied event seq, its time
--   to live in ms, the session's visitor id
-- returns how many were written; a session is not when another node owns it now (it was resumed
--   there) or the stored session has applied later events (a stale writer)
local node = ARGV[1]
local written = 0
for i, key in ipairs(KEYS) do
  local at = 4 * i - 2
  local stored = redis.call('HMGET', key, 'owner', 'seq')
  local owner = stored[1]
  if not (owner and node ~= '' and owner ~= node) and tonumber(stored[2] or '-1') <= tonumber(ARGV[at + 1]) then
    redis.call('HSET', key, 'seq', ARGV[at + 1], 'state', ARGV[at], 'visitor', ARGV[at + 3])
    if node ~= '' then redis.call('HSET', key, 'owner', node) end
    redis.call('PEXPIRE', key, ARGV[at + 2])
    written = written + 1
  end
end
return written
"""

SAVE_VISITORS = """
-- KEYS[i]: the visitors' state keys
-- ARGV[1]: their time to live in ms; ARGV[i + 1]: the packed state for KEYS[i]
-- returns how many were written (all: last writer wins)
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
end
return #KEYS
"""

OWN_SESSION = """
-- KEYS[1]: the session (hash: seq, state, owner, visitor)
-- ARGV[1]: the node taking the session over; ARGV[2]: time to live in ms (if it has none)
-- ARGV[3]: the visitor asking for it
-- returns the previous owner ("" for none), or "!" when the session is another visitor's (and
--   nothing changes); from now on only the new owner's writes land
local visitor = redis.call('HGET', KEYS[1], 'visitor')
if visitor and visitor ~= ARGV[3] then return '!' end
local before = redis.call('HGET', KEYS[1], 'owner') or ''
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'visitor', ARGV[3])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return before
"""

HOLD = """
-- KEYS[1]: the visitor's whereabouts (hash: session -> node)
-- ARGV[1]: the session; ARGV[2]: this node; ARGV[3]: time to live in ms
-- returns the node that held the session before ("" for none)
local before = redis.call('HGET', KEYS[1], ARGV[1]) or ''
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return before
"""

RELEASE = """
-- KEYS[1]: the visitor's whereabouts (hash: session -> node)
-- ARGV[1]: the session; ARGV[2]: this node
-- returns 1 when the session was this node's (and is now nobody's), 0 when another node took it
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

COMPARE_AND_SET = """
-- KEYS[1]: the campaign document; KEYS[2]: its revision
-- ARGV[1]: the revision the change was made from; ARGV[2]: the new document (JSON)
-- returns the new revision, or -1 when the revision moved meanwhile (another change won)
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
return redis.call('INCR', KEYS[2])
"""

CLAIM_DELIVERIES = """
-- KEYS[1]: due delivery ids (sorted set, ms); KEYS[2]: deliveries (hash id -> JSON)
-- ARGV[1]: now in ms; ARGV[2]: lease in ms; ARGV[3]: how many at most
-- returns the JSON of each delivery claimed (now due again at the lease's end, unless finished)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
    table.insert(out, body)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

ERASE_LOG_PAGE = """
-- KEYS[1]: the event log stream
-- ARGV[1]: where to start: "-", or "(" and the last entry id looked at; ARGV[2]: entries to look at
-- ARGV[3]: how many visitor needles follow; ARGV[4…]: the visitor needles, then the user needles
-- returns {the last id looked at, or "" when the stream ends; entries deleted (those holding a
--          visitor needle); {id, record, …} of the others holding a user needle, to be judged}
local page = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local visitors = 3 + tonumber(ARGV[3])
local doomed, candidates = {}, {}
for _, entry in ipairs(page) do
  local fields, record = entry[2], nil
  for i = 1, #fields, 2 do
    if fields[i] == 'r' then record = fields[i + 1] end
  end
  if record then
    local hit = false
    for j = 4, visitors do
      if string.find(record, ARGV[j], 1, true) then hit = true; break end
    end
    if hit then
      doomed[#doomed + 1] = entry[1]
    else
      for j = visitors + 1, #ARGV do
        if string.find(record, ARGV[j], 1, true) then
          candidates[#candidates + 1] = entry[1]
          candidates[#candidates + 1] = record
          break
        end
      end
    end
  end
end
if #doomed > 0 then redis.call('XDEL', KEYS[1], unpack(doomed)) end
local last = ''
if #page == tonumber(ARGV[2]) then last = page[#page][1] end
return {last, #doomed, candidates}
"""
