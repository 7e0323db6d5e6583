package stock

// The domain Lua bodies. The idempotency wrappers around them check and
// write the dedup and barrier records; the bodies only move quantities.
// Every check comes before the first write, because Redis does not roll a
// script back: a body that raises an error (error({err=...}), for commands
// that can never apply) has written nothing, and nothing is recorded, so the
// command is dead-lettered with no trace in Redis.
//
// Quantities are Redis integers (HINCRBY is exact on int64); Lua only
// compares them, as doubles, which is exact because every quantity stays
// below MaxStock = 2^53-1.

// reserveLua: KEYS[1] the order record, KEYS[1+i] the product of line i.
// ARGV[1] the order record's TTL in ms, ARGV[2i] and ARGV[2i+1] the product
// id and quantity of line i (merged: one line per product).
const reserveLua = `
local n = #KEYS - 1
local short = {}
for i = 1, n do
  local id, want = ARGV[2*i], tonumber(ARGV[2*i+1])
  local p = redis.call('HMGET', KEYS[i+1], 'available', 'name')
  if not p[1] then
    error({err = 'stock: unknown product [' .. id .. ']'})
  end
  local have = tonumber(p[1])
  if have < want then
    short[#short+1] = string.format('%s (wanted %d, %d left)', p[2] or id, want, have)
  end
end
if #short > 0 then
  return cjson.encode({ok = false, reason = 'out of stock: ' .. table.concat(short, ', ')})
end
local lines = {}
for i = 1, n do
  local q = ARGV[2*i+1]
  redis.call('HINCRBY', KEYS[i+1], 'available', '-' .. q)
  redis.call('HINCRBY', KEYS[i+1], 'reserved', q)
  lines[i] = {product_id = ARGV[2*i], quantity = tonumber(q)}
end
local enc = cjson.encode(lines)
redis.call('HSET', KEYS[1], 'state', 'reserved', 'lines', enc)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return '{"ok":true,"lines":' .. enc .. '}'
`

// keyOf maps the product ids in ARGV to their keys in KEYS[2..], and checks
// that every line to move has one: release and commit name their keys from
// the command, but move the lines that reserve recorded.
const keyOfLua = `
local function keyOf(lines, what)
  local key = {}
  for i = 1, #ARGV do key[ARGV[i]] = KEYS[i+1] end
  for _, l in ipairs(lines) do
    if not key[l.product_id] then
      error({err = 'stock: ' .. what .. ' does not name product [' .. l.product_id .. '], which the reservation holds'})
    end
  end
  return key
end
`

// releaseLua (the compensation of reserve): KEYS[1] the order record,
// KEYS[1+i] the product named by ARGV[i]. ACTION is reserve's recorded
// outcome. A refused reserve left nothing to give back; a committed order's
// stock is sold and cannot come back (refused: the orchestrator never
// compensates after the pivot, so this is a bug an operator must see).
const releaseLua = keyOfLua + `
local action = cjson.decode(ACTION)
if not action.ok then
  return cjson.encode({ok = true, reason = 'nothing to release: the reservation was refused'})
end
if redis.call('HGET', KEYS[1], 'state') == 'committed' then
  return cjson.encode({ok = false, reason = 'cannot release: the order is confirmed and its stock sold'})
end
local key = keyOf(action.lines, 'release')
for _, l in ipairs(action.lines) do
  redis.call('HINCRBY', key[l.product_id], 'reserved', -l.quantity)
  redis.call('HINCRBY', key[l.product_id], 'available', l.quantity)
end
redis.call('HSET', KEYS[1], 'state', 'released')
return '{"ok":true,"lines":' .. cjson.encode(action.lines) .. '}'
`

// commitLua (the pivot, apply-once): KEYS and ARGV as for release. The lines
// come from the order record, which only a successful reserve writes.
const commitLua = keyOfLua + `
local m = redis.call('HMGET', KEYS[1], 'state', 'lines')
if m[1] ~= 'reserved' then
  local why = 'nothing is reserved for this order'
  if m[1] == 'released' then why = 'its reservation was released' end
  return cjson.encode({ok = false, reason = 'cannot confirm: ' .. why})
end
local lines = cjson.decode(m[2])
local key = keyOf(lines, 'commit')
for _, l in ipairs(lines) do
  redis.call('HINCRBY', key[l.product_id], 'reserved', -l.quantity)
  redis.call('HINCRBY', key[l.product_id], 'sold', l.quantity)
end
redis.call('HSET', KEYS[1], 'state', 'committed')
return '{"ok":true,"lines":' .. m[2] .. '}'
`
