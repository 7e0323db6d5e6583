package payment

// The domain Lua bodies, wrapped by idempotency's barrier. Every check comes
// before the first write (Redis does not roll a script back); a command that
// can never apply raises error({err=...}) before writing, so nothing is
// applied or recorded and the command is dead-lettered.

// moneyLua formats a non-negative decimal string of cents as "12.00" with
// string operations only, exact for any length.
const moneyLua = `
local function money(s)
  s = string.rep('0', 3 - #s) .. s
  return s:sub(1, -3) .. '.' .. s:sub(-2)
end
`

// chargeLua: KEYS[1] the customer, KEYS[2] the order record. ARGV[1] the
// amount in cents (decimal), ARGV[2] the customer id, ARGV[3] the order
// record's TTL in ms.
const chargeLua = moneyLua + `
local c = redis.call('HMGET', KEYS[1], 'balance', 'limit')
if not c[1] then
  error({err = 'payment: unknown customer [' .. ARGV[2] .. ']'})
end
-- Go checked the amount; checked again here because above 2^53 a Lua
-- comparison is no longer exact, and this script is the last line.
local amount = tonumber(ARGV[1])
if not string.match(ARGV[1], '^[1-9][0-9]*$') or #ARGV[1] > 16 or amount > 9007199254740991 then
  error({err = 'payment: amount [' .. ARGV[1] .. '] out of range'})
end
local limit = c[2] or '0'
if tonumber(limit) > 0 and amount > tonumber(limit) then
  return cjson.encode({ok = false, reason = 'over the per-order limit of ' .. money(limit)})
end
if tonumber(c[1]) < amount then
  return cjson.encode({ok = false, reason = 'insufficient funds: balance ' .. money(c[1]) .. ', order ' .. money(ARGV[1])})
end
redis.call('HINCRBY', KEYS[1], 'balance', '-' .. ARGV[1])
redis.call('HINCRBY', KEYS[1], 'captured', ARGV[1])
redis.call('HSET', KEYS[2], 'customer', ARGV[2], 'amount', ARGV[1], 'state', 'captured')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return cjson.encode({ok = true, customer_id = ARGV[2], amount_cents = ARGV[1]})
`

// refundLua (the compensation of charge): KEYS as for charge, ARGV[1] the
// customer id of the refund command. ACTION is the charge's recorded
// outcome; its amount_cents is a decimal string, handed to HINCRBY as is.
const refundLua = `
local action = cjson.decode(ACTION)
if not action.ok then
  return cjson.encode({ok = true, reason = 'nothing to refund: the charge was declined'})
end
if action.customer_id ~= ARGV[1] then
  error({err = 'payment: refund names customer [' .. ARGV[1] .. '] but the charge was to [' .. action.customer_id .. ']'})
end
redis.call('HINCRBY', KEYS[1], 'balance', action.amount_cents)
redis.call('HINCRBY', KEYS[1], 'captured', '-' .. action.amount_cents)
redis.call('HSET', KEYS[2], 'state', 'refunded')
return cjson.encode({ok = true, customer_id = action.customer_id, amount_cents = action.amount_cents})
`
