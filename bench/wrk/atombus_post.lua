-- Appends to AtomBus: POST /feeds/{feed} with one Atom entry, to a feed
-- picked at random among `feeds` (AtomBus assigns the entry id itself).
-- Arguments: run_nonce, feeds.

local counter = 0
local headers = { ["Content-Type"] = "application/atom+xml;type=entry" }

function init(args)
  nonce = args[1]
  feeds = tonumber(args[2])
  math.randomseed(tonumber(nonce, 16) + thread_index * 7919)
end

function request()
  counter = counter + 1
  local feed = "bench-" .. nonce .. "-" .. math.random(1, feeds)
  local body = string.format(
    '<entry xmlns="http://www.w3.org/2005/Atom"><title>OrderPlaced</title>' ..
    '<content type="text">{"orderId":"order-%d","amount":%d.5,"currency":"EUR",' ..
    '"note":"benchmark event"}</content></entry>', counter, counter % 1000)
  return wrk.format("POST", "/feeds/" .. feed, headers, body)
end

function response(status, headers, body)
  count_status(status)
end
