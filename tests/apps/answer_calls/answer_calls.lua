-- answer_calls: the standalone half of forward_calls (tests/lapps_order.rs). Answers each
-- request handed to it with {method}, in the order they came:
--   pair()  kept until a second pair() comes; then both are answered back to back, so their
--           responses leave in one post of this thread's outbox.
--   wait()  answered, then "sent" is posted on forward_calls.sent (after this thread's outbox
--           is handed over: mqr:post with a timeout, in a standalone, posts it first).
-- Needs preload ["mqr"].
local service = {}

service.run = function()
  local pairs_kept = {}
  while true do
    local m, e = mqr:receive("forward_calls.calls", 1)
    if m then
      local h, method = m:match("^(%d+) (%S+)$")
      h = tonumber(h)
      if method == "pair" then
        pairs_kept[#pairs_kept + 1] = h
        if #pairs_kept == 2 then
          for _, kept in ipairs(pairs_kept) do
            assert(ws:send_response(kept, { "pair" }))
          end
          pairs_kept = {}
        end
      else
        assert(ws:send_response(h, { method }))
        if method == "wait" then
          assert(mqr:post("forward_calls.sent", "sent", 1))
        end
      end
    elseif e == "stopped" then
      break
    end
  end
end

return service
