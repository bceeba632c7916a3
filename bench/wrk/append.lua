-- Appends to eventfeed: POST /streams/{stream} with an events+json array of
-- `events_per_request` events, each with a fresh event id, to a stream
-- picked at random among `streams`.
-- Arguments: run_nonce (8 hex digits), streams, events_per_request.

local counter = 0
local headers = { ["Content-Type"] = "application/vnd.eventstore.events+json" }

function init(args)
  nonce = args[1]
  streams = tonumber(args[2])
  events_per_request = tonumber(args[3])
  math.randomseed(tonumber(nonce, 16) + thread_index * 7919)
end

-- Unique by construction (run, thread, counter), in UUID v4 layout.
local function event_id()
  counter = counter + 1
  return string.format("%s-%04x-4000-8000-%012x", nonce, thread_index, counter)
end

function request()
  local stream = "bench-" .. nonce .. "-" .. math.random(1, streams)
  local events = {}
  for i = 1, events_per_request do
    events[i] = string.format(
      '{"eventId":"%s","eventType":"OrderPlaced","data":{"orderId":"order-%d",' ..
      '"amount":%d.5,"currency":"EUR","note":"benchmark event"}}',
      event_id(), counter, counter % 1000)
  end
  return wrk.format("POST", "/streams/" .. stream, headers, "[" .. table.concat(events, ",") .. "]")
end

function response(status, headers, body)
  count_status(status)
end
