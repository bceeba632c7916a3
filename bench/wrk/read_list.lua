-- GETs paths picked at random from a file, one path per line.
-- Arguments: file, accept ("-" for none), and optionally authorization (an
-- Authorization header's value; "-" or absent for none).
-- Requests are formatted once, in init (see read_pages.lua).

local requests = {}

function init(args)
  local headers = {}
  if args[2] ~= "-" then headers["Accept"] = args[2] end
  if args[3] and args[3] ~= "-" then headers["Authorization"] = args[3] end
  for line in io.lines(args[1]) do
    if #line > 0 then table.insert(requests, wrk.format("GET", line, headers)) end
  end
  math.randomseed(os.time() + thread_index * 7919)
end

function request()
  return requests[math.random(1, #requests)]
end
