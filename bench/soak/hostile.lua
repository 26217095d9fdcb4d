-- Hostile traffic for the soak: random and malformed keys (new and legacy formats), forged
-- tokens, random X-Forwarded-For from a trusted proxy (every caller a new address), oversized
-- and malformed bodies, dot segments, with a pause (args[1], ms) before each. Every answer
-- must be a 4xx; 5xx are counted, and printed by kind with their count (SOAK5XX lines).
refused_from, listed_from = 400, 500
dofile("bench/soak/tally.lua")

local alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local function random_text(len)
  local out = {}
  for i = 1, len do
    local k = math.random(1, #alphabet)
    out[i] = alphabet:sub(k, k)
  end
  return table.concat(out)
end
local function random_hex(len)
  local out = {}
  for i = 1, len do out[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(out)
end
local function random_address()
  return string.format("%d.%d.%d.%d", math.random(1, 223), math.random(0, 255),
    math.random(0, 255), math.random(1, 254))
end

local big = string.rep("x", 70 * 1024)
function init(args)
  pause = tonumber(args[1] or "0")
  math.randomseed(os.time() + math.random(1, 100000))
  n = 0
  reset_tally()
end

function request()
  n = n + 1
  local xff = { ["X-Forwarded-For"] = random_address() }
  local kind = n % 7
  if kind == 0 then
    xff["X-API-Key"] = "eg_" .. random_text(48)
    return wrk.format("GET", "/v1/chat/x", xff)
  elseif kind == 1 then
    xff["Authorization"] = "Bearer eyJhbGciOiJFZERTQSJ9." .. random_text(40) .. "." .. random_text(86)
    return wrk.format("GET", "/v1/history/x", xff)
  elseif kind == 2 then
    xff["Content-Type"] = "application/json"
    xff["Authorization"] = "Bearer " .. random_text(40)
    return wrk.format("POST", "/v1/keys/verify", xff, '{"key":"eg_' .. random_text(40) .. '"}')
  elseif kind == 3 then
    xff["Content-Type"] = "application/json"
    return wrk.format("POST", "/admin/clients", xff, '{"name":"' .. big .. '"}')
  elseif kind == 4 then
    xff["Content-Type"] = "application/x-www-form-urlencoded"
    xff["Authorization"] = "Basic " .. random_text(30)
    return wrk.format("POST", "/v1/token", xff, "grant_type=client_credentials&scope=%ZZ")
  elseif kind == 5 then
    xff["X-API-Key"] = "eg_" .. random_hex(40)
    return wrk.format("GET", "/v1/history/x", xff)
  else
    return wrk.format("GET", "/v1/chat/../admin/" .. random_text(8) .. "%2e%2e", xff)
  end
end
