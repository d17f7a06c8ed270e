-- Shared by every bench script: per-thread status counting in a `response` hook and one
-- machine-readable summary line (BENCH_JSON {...}) printed by `done`, which bench/wrk.py parses.
-- Data (tokens, ids, logins) comes from the Lua file named by BENCH_DATA, written by bench/run.py.
local M = {}

local threads = {}

function M.data()
  local path = os.getenv("BENCH_DATA")
  if path == nil or path == "" then
    return {auth = {}, products = {}, logins = {}, floor_rows = {}}
  end
  return dofile(path)
end

local function json_string(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. s .. '"'
end

function M.install()
  setup = function(thread)
    table.insert(threads, thread)
    thread:set("tid", #threads)
  end

  response = function(status, headers, body)
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
    -- wrk's own "Non-2xx or 3xx" rule: anything outside 200-399 is an error.
    if status < 200 or status > 399 then
      bad = bad + 1
      if first_error == "" then
        first_error = key .. " " .. string.sub(body or "", 1, 300)
      end
    end
  end

  done = function(summary, latency, requests)
    local agg, total_bad, sample = {}, 0, ""
    for _, t in ipairs(threads) do
      local s = t:get("statuses") or {}
      for k, v in pairs(s) do agg[k] = (agg[k] or 0) + v end
      total_bad = total_bad + (t:get("bad") or 0)
      local fe = t:get("first_error") or ""
      if sample == "" and fe ~= "" then sample = fe end
    end
    local parts = {}
    for k, v in pairs(agg) do table.insert(parts, json_string(k) .. ":" .. v) end
    local e = summary.errors
    io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
      '"non_2xx_3xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
      '"statuses":{%s},"error_sample":%s}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean,
      total_bad, e.connect, e.read, e.write, e.timeout,
      table.concat(parts, ","), json_string(sample)))
  end
end

-- Thread-local globals the hooks use (each wrk thread has its own Lua state).
statuses = {}
bad = 0
first_error = ""
tid = 0

return M
