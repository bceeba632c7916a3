-- Multi-stream appends: POST /streams with two parts of one event each, to
-- two different streams picked at random among `streams`, each with a
-- fresh event id. Arguments: run_nonce (8 hex digits), streams, and mode:
-- "write" (expected version -2, every request written) or "conflict"
-- (an expected version no stream reaches, every request refused with 409).

local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  nonce = args[1]
  streams = tonumber(args[2])
  expected = args[3] == "conflict" and 1000000000 or -2
  math.randomseed(tonumber(nonce, 16) + thread_index * 7919)
end

local function part(stream)
  counter = counter + 1
  return string.format(
    '{"stream":"bench-%s-%d","expectedVersion":%d,"events":[{"eventId":"%s-%04x-4000-8000-%012x",' ..
    '"eventType":"OrderPlaced","data":{"orderId":"order-%d","amount":%d.5,"currency":"EUR"}}]}',
    nonce, stream, expected, nonce, thread_index, counter, counter, counter % 1000)
end

function request()
  local first = math.random(1, streams)
  local second = first % streams + 1
  return wrk.format("POST", "/streams", headers, "[" .. part(first) .. "," .. part(second) .. "]")
end

function response(status, headers, body)
  count_status(status)
end
