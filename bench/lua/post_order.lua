-- POST /api/v1/orders as the data file's users, 1-3 distinct random products of quantity 1, and
-- a fresh Idempotency-Key on every request (BENCH_NONCE, the thread and a counter).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
common.install()

local entries, products, nonce, counter = {}, {}, "", 0

function init(args)
  local data = common.data()
  entries = data.auth or {}
  products = data.products or {}
  nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
  math.randomseed(os.time() * 1000 + tid)
end

function request()
  counter = counter + 1
  local e = entries[((counter + tid) % #entries) + 1]
  local count = math.min(math.random(1, 3), #products)
  local chosen, items = {}, {}
  while #items < count do
    local p = products[math.random(1, #products)]
    if not chosen[p] then
      chosen[p] = true
      table.insert(items, '{"product_id":"' .. p .. '","quantity":1}')
    end
  end
  local body = '{"items":[' .. table.concat(items, ",") .. ']}'
  local headers = {
    ["Authorization"] = "Bearer " .. e.token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("bench-%s-%d-%d", nonce, tid, counter),
  }
  return wrk.format("POST", "/api/v1/orders", headers, body)
end
