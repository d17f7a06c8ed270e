-- POST /api/v1/auth/login with the right password, cycling over the data file's bench users
-- (every login succeeds, so the per-email failure counter never trips).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
common.install()

local reqs, n, i = {}, 0, 0

function init(args)
  local data = common.data()
  local headers = {["Content-Type"] = "application/json"}
  for k, login in ipairs(data.logins or {}) do
    local body = '{"email":"' .. login.email .. '","password":"' .. login.password .. '"}'
    table.insert(reqs, wrk.format("POST", "/api/v1/auth/login", headers, body))
  end
  n = #reqs
  i = (tid * 97) % math.max(n, 1)
end

function request()
  i = (i % n) + 1
  return reqs[i]
end
