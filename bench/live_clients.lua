-- Verification traffic from many clients: each request presents a key drawn uniformly at
-- random from the file args[1] (one key per line), or, with args[2] == "walk", every key in
-- turn (each of the args[3] threads its own share), to fill the cache before a measurement.
local admin = os.getenv("RELAY_ADMIN_TOKEN")
local counter = 0
function setup(thread)
  thread:set("number", counter)
  counter = counter + 1
end

function init(args)
  keys = {}
  for line in io.lines(args[1]) do keys[#keys + 1] = line end
  walk = args[2] == "walk"
  -- Threads walk interleaved shares: thread t takes keys t+1, t+1+n, ...
  step, next_key = tonumber(args[3] or "1"), number + 1
  math.randomseed(os.time() * 1000 + number)
  headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. admin }
end

function request()
  local key
  if walk then
    key = keys[next_key]
    next_key = next_key + step
    if next_key > #keys then next_key = number + 1 end
  else
    key = keys[math.random(1, #keys)]
  end
  return wrk.format("POST", "/v1/keys/verify", headers, '{"key":"' .. key .. '"}')
end
