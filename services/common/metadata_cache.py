"""The gateways' metadata cache in Redis (``cache_lru``), its side in Redis: the key prefix and the
Lua scripts, each lookup, fill and invalidation one atomic round trip. Shared code because two
services speak it: the gateway's cache (``services/gateway/cache/``) and the blobstore's garbage
collection, which clears what it removed (``services/blobstore/gc_cache.py``).

Key names are built here and nowhere else. Every script takes the same first four arguments: the key
prefix, the repository, a token (a fresh one for lookups and invalidations, the one a lookup returned
for fills) and ``mutable_ttl``.
"""

from __future__ import annotations

# Every key starts with it. Bump the version when what a key holds changes: old entries are then
# never read, only evicted.
PREFIX = "berth:c1:"

_COMMON = """
local P, repo, token, mutable_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function key(...) return P .. table.concat({...}, ':') end
local tok = key('tok', repo)
-- The repository's fill token, created when missing (evicted, expired, never set).
local function fill_token()
  local current = redis.call('GET', tok)
  if current then return current end
  redis.call('SET', tok, token, 'EX', mutable_ttl)
  return token
end
"""

# ARGV[5]: tag ('' when reading by digest), ARGV[6]: digest (when reading by digest).
# Returns {1, digest, payload} on a hit, {0, fill token} on a miss.
LOOKUP_MANIFEST = (
    _COMMON
    + """
local tag, digest, member = ARGV[5], ARGV[6], '@'
if tag ~= '' then
  digest, member = redis.call('GET', key('tag', repo, tag)), tag
end
if digest and redis.call('SISMEMBER', key('man', repo, digest), member) == 1 then
  local payload = redis.call('GET', key('pay', digest))
  if payload then return {1, digest, payload} end
end
return {0, fill_token()}
"""
)

# ARGV[5]: digest. Returns {1, size} on a hit, {0, fill token} on a miss.
LOOKUP_BLOB = (
    _COMMON
    + """
local digest = ARGV[5]
if redis.call('EXISTS', key('lnk', repo, digest)) == 1 then
  local size = redis.call('GET', key('size', digest))
  if size then return {1, size} end
end
return {0, fill_token()}
"""
)

# ARGV[5]: tag or '', ARGV[6]: digest, ARGV[7]: payload, ARGV[8]: ttl.
# Content-addressed bytes are right whatever happened meanwhile; the rest only with the same token.
FILL_MANIFEST = (
    _COMMON
    + """
local tag, digest = ARGV[5], ARGV[6]
redis.call('SET', key('pay', digest), ARGV[7], 'EX', ARGV[8])
if redis.call('GET', tok) ~= token then return 0 end
local links = key('man', repo, digest)
if tag ~= '' then
  redis.call('SADD', links, '@', tag)
  redis.call('SET', key('tag', repo, tag), digest, 'EX', mutable_ttl)
else
  redis.call('SADD', links, '@')
end
redis.call('EXPIRE', links, mutable_ttl)
return 1
"""
)

# ARGV[5]: digest, ARGV[6]: size, ARGV[7]: ttl.
FILL_BLOB = (
    _COMMON
    + """
local digest = ARGV[5]
redis.call('SET', key('size', digest), ARGV[6], 'EX', ARGV[7])
if redis.call('GET', tok) ~= token then return 0 end
redis.call('SET', key('lnk', repo, digest), '1', 'EX', mutable_ttl)
return 1
"""
)

# ARGV[5]: what changed ('tag', 'manifest' or 'blob'), ARGV[6]: its tag or digest.
# A new token first: fills begun before this call are refused from now on.
INVALIDATE = (
    _COMMON
    + """
local what, name = ARGV[5], ARGV[6]
redis.call('SET', tok, token, 'EX', mutable_ttl)
if what == 'tag' then
  redis.call('DEL', key('tag', repo, name))
elseif what == 'manifest' then
  -- The blobstore deleted every tag pointing at the manifest; without the set they all miss.
  local links = key('man', repo, name)
  for _, member in ipairs(redis.call('SMEMBERS', links)) do
    if member ~= '@' then redis.call('DEL', key('tag', repo, member)) end
  end
  redis.call('DEL', links)
elseif what == 'blob' then
  redis.call('DEL', key('lnk', repo, name))
else
  return redis.error_reply('unknown invalidation ' .. what)
end
return 1
"""
)
