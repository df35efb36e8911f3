# -*- test-case-name: tests.cluster.test_registry -*-
"""
The cluster's steps as Lua scripts: each runs in Redis in one round trip,
atomically, so two nodes never see half of another's step.

Keys, all under C{socktopus:}:

  - C{c:APP}: a hash, connection id -> C{"NODE GENERATION"}, the directory;
    a generation is C{"MS.N"}: when the connection was made (ms, the node's
    clock) and the node's count of connections, so that of two connections
    with one id the newer can be told after an outage.
  - C{m:NODE}: a set of C{"APP\\0ID"} a node registered, so a dead node's
    directory entries can be found and removed.
  - C{nodes}: a sorted set, node -> time of its last heartbeat (ms).
  - C{nc:NODE}: a node's client counts per app (JSON), expiring with it.
  - C{denied}: a sorted set, C{"APP\\0ID"} -> kick time (ms), trimmed to the
    token lifespan.
  - C{n:NODE}: the pub/sub channel of a node; C{all}: of every node.

Times are Redis' own (C{TIME}), so the nodes' clocks need not agree, except
for the kick stamps that tokens are compared with (the kicking node's clock,
as on one node).

Keys are built inside the scripts, so this needs one Redis (or a replicated
pair), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PREFIX = "socktopus:"

_COMMON = """
local P = 'socktopus:'
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local live = {}
local function isLive(node, since)
  local known = live[node]
  if known == nil then
    local seen = redis.call('ZSCORE', P .. 'nodes', node)
    known = seen ~= false and tonumber(seen) >= since
    live[node] = known
  end
  return known
end
local function owner(entry)
  return string.match(entry, '^[^ ]+')
end
local function generation(entry)
  return string.match(entry, ' (.*)$')
end
local function connectedAt(gen)
  return tonumber(string.match(gen, '^%d+')) or 0
end
-- Remove the directory entries of these members of a node's set ("APP\\0ID")
-- that still name that node.
local function forget(node, members)
  for _, member in ipairs(members) do
    local app, id = string.match(member, '^([^%z]*)%z(.*)$')
    local dir = P .. 'c:' .. app
    local entry = redis.call('HGET', dir, id)
    if entry and owner(entry) == node then redis.call('HDEL', dir, id) end
  end
end
"""


@dataclass(frozen=True)
class Script:
    """
    A Lua script and the SHA-1 that EVALSHA names it by.
    """

    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


#: ARGV: me, then (op, generation, app, id) quads, in the order they
#: happened on this node: op "r" claims the id for this node and tells the
#: node that held it (another one) to close its connection; op "u" forgets
#: the entry if it is still this connection's. One script for every
#: connect and disconnect of a reactor turn: a reconnect storm is a few
#: commands, not one per client.
CHANGES = Script(
    "changes",
    _COMMON
    + """
local me = ARGV[1]
for i = 2, #ARGV, 4 do
  local op, gen, app, id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local dir = P .. 'c:' .. app
  if op == 'r' then
    local previous = redis.call('HGET', dir, id)
    redis.call('HSET', dir, id, me .. ' ' .. gen)
    redis.call('SADD', P .. 'm:' .. me, app .. '\\0' .. id)
    if previous then
      local node = owner(previous)
      if node ~= me then
        redis.call('SREM', P .. 'm:' .. node, app .. '\\0' .. id)
        redis.call('PUBLISH', P .. 'n:' .. node,
          cjson.encode({t = 'e', a = app, i = id, g = generation(previous)}))
      end
    end
  elseif redis.call('HGET', dir, id) == me .. ' ' .. gen then
    redis.call('HDEL', dir, id)
    redis.call('SREM', P .. 'm:' .. me, app .. '\\0' .. id)
  end
end
return 1
""",
)

#: ARGV: me, liveness (ms), fresh, then (generation, app, id) triples. After
#: Redis came back: with C{fresh} "1" (the first part), forget this node's
#: old entries (connections that closed while Redis was away); then claim
#: each id unless a live other node holds a connection made later (during
#: the outage), telling a node that holds an older one to close it, as a
#: connect does; return the generations lost to newer connections.
RESTORE = Script(
    "restore",
    _COMMON
    + """
local me, since = ARGV[1], now() - tonumber(ARGV[2])
redis.call('ZADD', P .. 'nodes', now(), me)
if ARGV[3] == '1' then
  forget(me, redis.call('SMEMBERS', P .. 'm:' .. me))
  redis.call('DEL', P .. 'm:' .. me)
end
local lost = {}
for i = 4, #ARGV, 3 do
  local gen, app, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local dir = P .. 'c:' .. app
  local previous = redis.call('HGET', dir, id)
  local node = previous and owner(previous)
  local other = previous and node ~= me and isLive(node, since)
  if other and connectedAt(generation(previous)) >= connectedAt(gen) then
    lost[#lost + 1] = gen
  else
    redis.call('HSET', dir, id, me .. ' ' .. gen)
    redis.call('SADD', P .. 'm:' .. me, app .. '\\0' .. id)
    if previous and node ~= me then
      redis.call('SREM', P .. 'm:' .. node, app .. '\\0' .. id)
      if other then
        redis.call('PUBLISH', P .. 'n:' .. node,
          cjson.encode({t = 'e', a = app, i = id, g = generation(previous)}))
      end
    end
  end
end
return lost
""",
)

#: ARGV: me, request, app, liveness (ms), then (id, record) pairs: publish
#: each live other node's records to it in one message. Returns the number of
#: nodes that got a message, i.e. the answers to wait for; a record that went
#: nowhere (connected nowhere, on a dead node, or on a node that did not hear)
#: stays failed.
DELIVER = Script(
    "deliver",
    _COMMON
    + """
local me, request, app = ARGV[1], ARGV[2], ARGV[3]
local since = now() - tonumber(ARGV[4])
local dir = P .. 'c:' .. app
local groups, order = {}, {}
for i = 5, #ARGV, 2 do
  local entry = redis.call('HGET', dir, ARGV[i])
  local node = entry and owner(entry)
  if node and node ~= me and isLive(node, since) then
    if groups[node] == nil then
      groups[node] = {}
      order[#order + 1] = node
    end
    local group = groups[node]
    group[#group + 1] = ARGV[i + 1]
  end
end
local sent = 0
local head = '{"t":"d","f":"' .. me .. '","r":' .. request
  .. ',"a":' .. cjson.encode(app) .. ',"m":['
for _, node in ipairs(order) do
  local message = head .. table.concat(groups[node], ',') .. ']}'
  if redis.call('PUBLISH', P .. 'n:' .. node, message) > 0 then
    sent = sent + 1
  end
end
return sent
""",
)

#: ARGV: me, app, kick time (ms), lifespan (ms), the broadcast, liveness
#: (ms), then ids.
#: Deny the ids' older tokens cluster-wide, tell every node, and return the
#: ids connected on a live other node.
KICK = Script(
    "kick",
    _COMMON
    + """
local me, app, broadcast = ARGV[1], ARGV[2], ARGV[5]
local at, lifespan = tonumber(ARGV[3]), tonumber(ARGV[4])
local since = now() - tonumber(ARGV[6])
local dir, denied = P .. 'c:' .. app, P .. 'denied'
local connected = {}
for i = 7, #ARGV do
  local id = ARGV[i]
  redis.call('ZADD', denied, 'GT', at, app .. '\\0' .. id)
  local entry = redis.call('HGET', dir, id)
  local node = entry and owner(entry)
  if node then
    -- Closed now (its node hears the broadcast): out of the directory at
    -- once, so presence and a second kick say not connected.
    redis.call('HDEL', dir, id)
    redis.call('SREM', P .. 'm:' .. node, app .. '\\0' .. id)
    if node ~= me and isLive(node, since) then connected[#connected + 1] = id end
  end
end
redis.call('ZREMRANGEBYSCORE', denied, '-inf', '(' .. (at - lifespan))
redis.call('PUBLISH', P .. 'all', broadcast)
return connected
""",
)

#: ARGV: lifespan (ms), then (app, id, kick time) triples: kicks this node
#: answered while Redis was away, made cluster-wide after it came back.
REMEMBER = Script(
    "remember",
    _COMMON
    + """
local denied = P .. 'denied'
for i = 2, #ARGV, 3 do
  redis.call('ZADD', denied, 'GT', tonumber(ARGV[i + 2]), ARGV[i] .. '\\0' .. ARGV[i + 1])
end
redis.call('ZREMRANGEBYSCORE', denied, '-inf', '(' .. (now() - tonumber(ARGV[1])))
return 1
""",
)

#: ARGV: since (ms): the kicks whose tokens may still be valid, as
#: (member, time) pairs.
DENIED = Script(
    "denied",
    _COMMON
    + """
return redis.call('ZRANGEBYSCORE', P .. 'denied', ARGV[1], '+inf', 'WITHSCORES')
""",
)

#: ARGV: me, liveness (ms), this node's counts (JSON), token lifespan (ms).
#: Mark this node live, remove (a bounded part of) dead nodes' entries and
#: kicks older than any token, and answer whether this node was live
#: before, and every live node with its counts.
HEARTBEAT = Script(
    "heartbeat",
    _COMMON
    + """
local me, ttl, counts = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local t = now()
local since = t - ttl
local nodes = P .. 'nodes'
local before = redis.call('ZSCORE', nodes, me)
local wasLive = before ~= false and tonumber(before) >= since
redis.call('ZADD', nodes, t, me)
redis.call('SET', P .. 'nc:' .. me, counts, 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', P .. 'denied', '-inf', '(' .. (t - tonumber(ARGV[4])))
-- At most 1,000 entries of dead nodes a beat: Redis is never held long.
local budget = 1000
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. since)) do
  local members = redis.call('SPOP', P .. 'm:' .. dead, budget)
  forget(dead, members)
  budget = budget - #members
  if budget <= 0 then break end
  redis.call('ZREM', nodes, dead)
  redis.call('DEL', P .. 'nc:' .. dead)
end
local liveNodes = redis.call('ZRANGEBYSCORE', nodes, since, '+inf')
local countKeys = {}
for i, node in ipairs(liveNodes) do countKeys[i] = P .. 'nc:' .. node end
local liveCounts = redis.call('MGET', unpack(countKeys))
return {wasLive and 1 or 0, liveNodes, liveCounts}
""",
)

#: ARGV: me, liveness (ms), app, then ids. Which of the ids are connected
#: on a live other node (this node's own registry knows its connections
#: better: one closing is gone there already).
PRESENCE = Script(
    "presence",
    _COMMON
    + """
local me, since = ARGV[1], now() - tonumber(ARGV[2])
local dir = P .. 'c:' .. ARGV[3]
local connected = {}
for i = 4, #ARGV do
  local entry = redis.call('HGET', dir, ARGV[i])
  local node = entry and owner(entry)
  if node and node ~= me and isLive(node, since) then connected[#connected + 1] = ARGV[i] end
end
return connected
""",
)

#: ARGV: me, liveness (ms), app, cursor, count. One page of an app's whole
#: directory (C{HSCAN}, about C{count} entries from C{cursor}, "0" for the
#: first): the next cursor ("0" after the last page), then the ids on that
#: page connected on a live other node. An app of 100,000 ids is read a
#: page per round trip, so neither Redis nor the node handling the answer
#: is held by all of it at once; an id may come twice (the scan's own
#: repeats), and one that moves between nodes during the scan may be
#: missed, as it is in the middle of reconnecting.
PRESENCE_PAGE = Script(
    "presence-page",
    _COMMON
    + """
local me, since = ARGV[1], now() - tonumber(ARGV[2])
local page = redis.call('HSCAN', P .. 'c:' .. ARGV[3], ARGV[4], 'COUNT', tonumber(ARGV[5]))
local found = {page[1]}
local entries = page[2]
for i = 1, #entries, 2 do
  local node = owner(entries[i + 1])
  if node ~= me and isLive(node, since) then found[#found + 1] = entries[i] end
end
return found
""",
)

#: ARGV: me. A node stopping cleanly: its entries and heartbeat go at once.
LEAVE = Script(
    "leave",
    _COMMON
    + """
local me = ARGV[1]
forget(me, redis.call('SMEMBERS', P .. 'm:' .. me))
redis.call('DEL', P .. 'm:' .. me, P .. 'nc:' .. me)
redis.call('ZREM', P .. 'nodes', me)
return 1
""",
)

SCRIPTS = [
    CHANGES,
    REMEMBER,
    RESTORE,
    DELIVER,
    KICK,
    DENIED,
    HEARTBEAT,
    PRESENCE,
    PRESENCE_PAGE,
    LEAVE,
]
