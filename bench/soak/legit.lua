-- Legitimate traffic for the soak: verify, relayed GETs with a key and with a token, token
-- exchanges and an admin list, in turn, with a pause (args[4], ms) before each. Counts 5xx
-- and other non-2xx answers, and prints each kind of failed answer with its count (SOAK5XX).
refused_from, listed_from = 300, 300
dofile("bench/soak/tally.lua")

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
  n = 0
  reset_tally()
end

function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end
