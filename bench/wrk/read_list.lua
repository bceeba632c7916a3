-- GETs paths picked at random from a file, one path per line.
-- Arguments: file, accept ("-" for none).
-- Requests are formatted once, in init (see read_pages.lua).

local requests = {}

function init(args)
  local headers = {}
  if args[2] ~= "-" then headers["Accept"] = args[2] end
  for line in io.lines(args[1]) do
    if #line > 0 then table.insert(requests, wrk.format("GET", line, headers)) end
  end
  math.randomseed(os.time() + thread_index * 7919)
end

function request()
  return requests[math.random(1, #requests)]
end
