-- What the soak's two load scripts share (each loads it with dofile, from the repository's
-- root, where bench/soak.sh runs wrk): answers tallied per thread, and one summary for
-- bench/soak.sh. A script sets, before loading it, `refused_from` (the lowest status counted
-- as refused) and `listed_from` (the lowest status also listed by kind, status and body, in
-- SOAK5XX lines), and sets the counters with `reset_tally()` in its `init`.
local threads = {}
function setup(thread) table.insert(threads, thread) end

function reset_tally()
  server_errors, refused, failures = 0, 0, {}
end

function response(status, headers, body)
  if status >= 500 then server_errors = server_errors + 1
  elseif status >= refused_from then refused = refused + 1 end
  if status >= listed_from then
    -- Which answer it was (the problem's detail says what failed), to attribute it.
    local what = status .. " " .. string.gsub(string.sub(body or "", 1, 160), "%s+", " ")
    failures[what] = (failures[what] or 0) + 1
  end
end

-- A pause before each request holds the load at a steady rate well inside what the machine
-- can serve: a soak measures staying power, not the ceiling (bench/run.sh does that).
function delay() return pause end

function done(summary, latency)
  local e, r, seen = 0, 0, {}
  for _, t in ipairs(threads) do
    e = e + t:get("server_errors"); r = r + t:get("refused")
    for what, count in pairs(t:get("failures")) do seen[what] = (seen[what] or 0) + count end
  end
  for what, count in pairs(seen) do io.write(string.format("SOAK5XX %d %s\n", count, what)) end
  io.write(string.format("SOAK %d %d %d %.3f %.3f\n", summary.requests, e, r,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
