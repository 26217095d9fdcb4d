-- GET with a key drawn at random from the file args[1] in X-API-Key: the original service's
-- lookup, for bench/legacy.sh.
function init(args)
  keys = {}
  for line in io.lines(args[1]) do keys[#keys + 1] = line end
  math.randomseed(os.time())
end

function request()
  return wrk.format("GET", "/verify", { ["X-API-Key"] = keys[math.random(1, #keys)] })
end
