-- lapps_deferred: a LAppS-protocol test app (tests/lapps_order.rs) that answers some requests
-- later than it is called, as an app waiting on a timer or an mqr message would.
--   later(...)  not answered until release is called
--   release()   answers every kept request in order with its params, then {"released"}
--   fail()      raises (the host answers -32603)
--   settle()    answers every kept request in order, then raises (its own answer is -32603)
--   bye         a notification: onMessage returns false (the connection is to close after
--               the answers it is owed)
--   answer_fail(...)  sends a response with its params (the oldest request owed takes it),
--               then raises: -32603 for it only if it is still owed (tests/lapps_random.rs)
--   echo(...)   answers with its params at once
--   release_all()  answers every kept request of every connection, then {"released"}
--   hand_off(n)    not answered here: posts "<handler> <n>" on the mqr queue
--                  lapps_deferred.handed (the test creates it), for hold(true) in another
--                  instance to answer with {n}
--   pass_on()   answers every request handed off (hand_off) so far with its {n}, then
--               {"passed"}
--   hold(all)   keeps the instance busy: posts "busy" on the mqr queue lapps_deferred.busy
--               (the test creates it), waits for a message on lapps_deferred.release, then
--               answers {"released"}. With all = true it first answers every kept request of
--               every connection, and every request handed off (hand_off), so those responses
--               are taken but not posted while it waits.
--               Needs preload ["mqr"] and "instruction_budget": 0. In a network service
--               neither mqr:post (without a timeout) nor mqr:poll hands the instance's
--               outbox over, so what it queued before waits, unposted, until it returns.
local app = {}

-- Per handler, the params of the requests kept unanswered, oldest first.
local kept = {}

local methods = {}

methods.later = function(handler, message)
  local list = kept[handler] or {}
  kept[handler] = list
  list[#list + 1] = message.params
end

-- Answers every request kept for handler, oldest first.
local function answer_kept(handler)
  for _, params in ipairs(kept[handler] or {}) do
    assert(ws:send_response(handler, params))
  end
  kept[handler] = nil
end

methods.hand_off = function(handler, message)
  local n = message.params[1]
  assert(mqr:post("lapps_deferred.handed", string.format("%.0f %d", handler, n)))
end

-- Answers every request handed off so far, each with {n}.
local function answer_handed()
  while true do
    local handed = mqr:poll("lapps_deferred.handed")
    if not handed then
      break
    end
    local h, n = handed:match("^(%d+) (%-?%d+)$")
    assert(ws:send_response(tonumber(h), { tonumber(n) }))
  end
end

methods.pass_on = function(handler)
  answer_handed()
  assert(ws:send_response(handler, { "passed" }))
end

methods.release = function(handler)
  answer_kept(handler)
  assert(ws:send_response(handler, { "released" }))
end

methods.release_all = function(handler)
  for h in pairs(kept) do
    answer_kept(h)
  end
  assert(ws:send_response(handler, { "released" }))
end

methods.hold = function(handler, message)
  if message.params and message.params[1] == true then
    for h in pairs(kept) do
      answer_kept(h)
    end
    answer_handed()
  end
  assert(mqr:post("lapps_deferred.busy", "busy"))
  while not mqr:poll("lapps_deferred.release") do
  end
  assert(ws:send_response(handler, { "released" }))
end

methods.settle = function(handler)
  answer_kept(handler)
  error("settled the others, not this one")
end

methods.fail = function()
  error("fail was called")
end

methods.answer_fail = function(handler, message)
  assert(ws:send_response(handler, message.params))
  error("answered, then failed")
end

methods.echo = function(handler, message)
  assert(ws:send_response(handler, message.params))
end

app.onMessage = function(handler, msg_type, message)
  if msg_type == 3 or msg_type == 4 then
    methods[message.method](handler, message)
  elseif message.method == "bye" then
    return false
  end
  return true
end

app.onDisconnect = function(handler)
  kept[handler] = nil
end

return app
