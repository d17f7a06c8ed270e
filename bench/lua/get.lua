-- GET of BENCH_PATH, where {product}, {order}, {user}, {org} and {row} are replaced by ids from
-- the data file and, when BENCH_AUTH=1, a bearer token of the user who owns them is sent
-- (BENCH_AUTH=key: the API key of that user's organization). With BENCH_IF_NONE_MATCH=1 each
-- product's ETag (data.etags, read after start-up) goes in If-None-Match.
-- Requests are formatted once in init and replayed round-robin, so the client costs little.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
common.install()

local reqs, n, i = {}, 0, 0

function init(args)
  local data = common.data()
  local template = os.getenv("BENCH_PATH") or "/"
  local auth_kind = os.getenv("BENCH_AUTH") or "0"
  local auth = auth_kind ~= "0"
  local conditional = os.getenv("BENCH_IF_NONE_MATCH") == "1"
  local etags = data.etags or {}
  local limit = 2000
  local entries = data.auth or {}
  local k = 0
  while #reqs < limit do
    k = k + 1
    local headers = {}
    local path = template
    if auth or string.find(template, "{order}") or string.find(template, "{user}")
        or string.find(template, "{org}") then
      if #entries == 0 then break end
      local e = entries[((k + tid) % #entries) + 1]
      if auth_kind == "key" then
        headers["Authorization"] = "Bearer " .. e.key
      elseif auth then
        headers["Authorization"] = "Bearer " .. e.token
      end
      path = string.gsub(path, "{user}", e.user_id)
      path = string.gsub(path, "{org}", e.org or "")
      if string.find(path, "{order}") then
        if #e.orders == 0 then break end
        path = string.gsub(path, "{order}", e.orders[(math.floor(k / #entries) % #e.orders) + 1])
      end
    end
    if string.find(path, "{product}") then
      local p = data.products or {}
      if #p == 0 then break end
      local product = p[((k * 7 + tid) % #p) + 1]
      path = string.gsub(path, "{product}", product)
      if conditional and etags[product] then headers["If-None-Match"] = etags[product] end
    end
    table.insert(reqs, wrk.format("GET", path, headers))
    if path == template and not auth then break end  -- a static request: one is enough
  end
  if #reqs == 0 then
    -- No data for the placeholders: send the template as is (it fails, and is counted).
    table.insert(reqs, wrk.format("GET", template))
  end
  n = #reqs
end

function request()
  i = (i % n) + 1
  return reqs[i]
end
