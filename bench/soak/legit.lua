-- Legitimate traffic for the soak: verify, relayed GETs with a key and with a token, token
-- exchanges and an admin list, in turn, with a pause (args[4], ms) before each. Counts 5xx
-- and other non-2xx answers, and prints each kind of failed answer with its count (SOAK5XX).
local threads = {}
function setup(thread) table.insert(threads, thread) end

local requests = {}
function init(args)
  local key, token, admin = args[1], args[2], args[3]
  pause = tonumber(args[4] or "0")
  requests = {
    wrk.format("POST", "/v1/keys/verify",
      { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. admin },
      '{"key":"' .. key .. '"}'),
    wrk.format("GET", "/v1/chat/x", { ["X-API-Key"] = key }),
    wrk.format("GET", "/v1/history/x", { ["Authorization"] = "Bearer " .. token }),
    wrk.format("POST", "/v1/token",
      { ["Content-Type"] = "application/x-www-form-urlencoded", ["X-API-Key"] = key },
      "grant_type=client_credentials"),
    wrk.format("GET", "/admin/clients?limit=5", { ["Authorization"] = "Bearer " .. admin }),
  }
  n, server_errors, refused, failures = 0, 0, 0, {}
end

function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end

-- A pause before each request holds the load at a steady rate well inside what the machine
-- can serve: a soak measures staying power, not the ceiling (bench/run.sh does that).
function delay() return pause end

function response(status, headers, body)
  if status < 300 then return end
  if status >= 500 then server_errors = server_errors + 1 else refused = refused + 1 end
  -- Which answer it was (the problem's detail says what failed), to attribute it.
  local what = status .. " " .. string.gsub(string.sub(body or "", 1, 160), "%s+", " ")
  failures[what] = (failures[what] or 0) + 1
end

function done(summary, latency)
  local e, r = 0, 0
  local seen = {}
  for _, t in ipairs(threads) do
    e = e + t:get("server_errors"); r = r + t:get("refused")
    for what, count in pairs(t:get("failures")) do seen[what] = (seen[what] or 0) + count end
  end
  for what, count in pairs(seen) do io.write(string.format("SOAK5XX %d %s\n", count, what)) end
  io.write(string.format("SOAK %d %d %d %.3f %.3f\n", summary.requests, e, r,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
