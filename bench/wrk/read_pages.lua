-- Reads full forward pages at random: GET
-- {prefix}/streams/{stream_prefix}{s}/{page * page_size}/forward/{page_size}{query}
-- for s in [0, streams) and page in [0, pages_per_stream).
-- Arguments: prefix, stream_prefix, streams, pages_per_stream, page_size,
-- query, accept, accept_encoding ("-" for none), and optionally
-- authorization (an Authorization header's value; "-" or absent for none).
--
-- Every request is formatted once, in init: request() only picks one, so
-- wrk's own cost per request stays far below the servers' (a string.format
-- per request would make wrk the bottleneck against nginx).

local requests = {}

function init(args)
  local prefix = args[1] == "-" and "" or args[1]
  local stream_prefix = args[2]
  local streams = tonumber(args[3])
  local pages = tonumber(args[4])
  local page_size = tonumber(args[5])
  local query = args[6] == "-" and "" or args[6]
  local headers = {}
  if args[7] ~= "-" then headers["Accept"] = args[7] end
  if args[8] ~= "-" then headers["Accept-Encoding"] = args[8] end
  if args[9] and args[9] ~= "-" then headers["Authorization"] = args[9] end
  for stream = 0, streams - 1 do
    for page = 0, pages - 1 do
      local path = string.format("%s/streams/%s%d/%d/forward/%d%s",
        prefix, stream_prefix, stream, page * page_size, page_size, query)
      table.insert(requests, wrk.format("GET", path, headers))
    end
  end
  math.randomseed(os.time() + thread_index * 7919)
end

function request()
  return requests[math.random(1, #requests)]
end
