-- forward_calls: a LAppS-protocol test app (tests/lapps_order.rs) that answers nothing itself:
-- it hands every request to the standalone `answer_calls` (the docs' way to answer in call
-- order from one place), as "<handler> <method>" on the mqr queue forward_calls.calls.
--   refuse()  not handed over: raises (the host answers -32603 in its turn), as an app whose
--           mqr:post answered nil, "full" may (docs/lua-api.md).
--   wait()  also waits, in this call, until answer_calls has sent its response (a message on
--           forward_calls.sent): what this instance queued before stays unposted meanwhile
--           unless something posts it.
-- Needs preload ["mqr"] and "instruction_budget": 0.
local app = {}

app.onMessage = function(handler, msg_type, message)
  if msg_type == 3 then
    if message.method == "refuse" then
      error("queue full")
    end
    assert(mqr:post("forward_calls.calls", string.format("%.0f %s", handler, message.method)))
    if message.method == "wait" then
      while not mqr:poll("forward_calls.sent") do end
    end
  end
  return true
end

return app
