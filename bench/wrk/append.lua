-- Appends to eventfeed: POST /streams/{stream} with an events+json array of
-- `events_per_request` events, each with a fresh event id, to a stream
-- picked at random among `streams`.
-- Arguments: run_nonce (8 hex digits), streams, events_per_request, and
-- optionally categories and event_types (both default 0), ids
-- ("ordered", the default, or "random"), authorization (an
-- Authorization header's value, sent with every request; "-" or absent for
-- none) and expected (an ES-ExpectedVersion sent with every request; "-"
-- or absent for none: a version no stream reaches makes every append a
-- refusal, the append path without its writes).
--
-- By default every stream is `bench-{nonce}-{n}` (one category) and every
-- event an `OrderPlaced`. With `categories` > 0, stream n is
-- `{category}-{nonce}{n}`, its category one of `categories` (order,
-- payment, ...), so that `$ce-` has that many streams to maintain; with
-- `event_types` > 0, each event's type is picked at random among that many
-- (OrderPlaced, PaymentReceived, ...), so that `$et-` has as many.
--
-- Event ids are "ordered" by default: each later than the last, as
-- time-ordered ids (UUIDv7) are, so the store's id index grows at one end.
-- "random" ids are spread over the whole index, as random ids (UUIDv4,
-- what most clients generate) are.

local counter = 0
local headers = { ["Content-Type"] = "application/vnd.eventstore.events+json" }

local CATEGORIES = { "order", "payment", "shipment", "invoice", "customer", "cart", "refund", "stock" }
local EVENT_TYPES = {
  "OrderPlaced", "OrderConfirmed", "OrderShipped", "OrderCancelled", "PaymentReceived", "PaymentRefunded",
  "ShipmentDispatched", "ShipmentDelivered", "InvoiceIssued", "InvoicePaid", "CustomerRegistered",
  "CustomerMoved", "CartItemAdded", "CartItemRemoved", "StockReserved", "StockReleased",
}

local function name_of(names, index)
  return names[index] or (names[((index - 1) % #names) + 1] .. index)
end

function init(args)
  nonce = args[1]
  streams = tonumber(args[2])
  events_per_request = tonumber(args[3])
  categories = tonumber(args[4] or "0")
  event_types = tonumber(args[5] or "0")
  random_ids = args[6] == "random"
  if args[7] and args[7] ~= "-" then headers["Authorization"] = args[7] end
  if args[8] and args[8] ~= "-" then headers["ES-ExpectedVersion"] = args[8] end
  math.randomseed(tonumber(nonce, 16) + thread_index * 7919)
end

-- Unique by construction (run, thread, counter), in UUID layout; random
-- ids start with 76 random bits and keep the thread and counter after them.
local function event_id()
  counter = counter + 1
  if random_ids then
    return string.format("%08x-%04x-4%03x-%04x-%04x%08x", math.random(0, 0xffffffff), math.random(0, 0xffff),
      math.random(0, 0xfff), 0x8000 + math.random(0, 0x3fff), thread_index, counter)
  end
  return string.format("%s-%04x-4000-8000-%012x", nonce, thread_index, counter)
end

local function stream_name(n)
  if categories > 0 then
    return name_of(CATEGORIES, (n % categories) + 1) .. "-" .. nonce .. n
  end
  return "bench-" .. nonce .. "-" .. n
end

local function event_type()
  if event_types > 0 then
    return name_of(EVENT_TYPES, math.random(1, event_types))
  end
  return "OrderPlaced"
end

function request()
  local stream = stream_name(math.random(1, streams))
  local events = {}
  for i = 1, events_per_request do
    events[i] = string.format(
      '{"eventId":"%s","eventType":"%s","data":{"orderId":"order-%d",' ..
      '"amount":%d.5,"currency":"EUR","note":"benchmark event"}}',
      event_id(), event_type(), counter, counter % 1000)
  end
  return wrk.format("POST", "/streams/" .. stream, headers, "[" .. table.concat(events, ",") .. "]")
end

function response(status, headers, body)
  count_status(status)
end
