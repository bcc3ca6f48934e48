-- mqr_fanin_receiver: forwards every message of "fanin" to "fanin.out" as
-- "<receiver instance>:<message>" until stopping and drained.
local r = {}

r.init = function()
  r.queue = mqr:create("fanin", 16)
end

r.run = function()
  while true do
    local msg, err = r.queue:receive(0.5)
    if msg then
      local ok, perr = mqr:post("fanin.out", instance_id .. ":" .. msg, 30)
      if not ok then
        print("fanin.out: " .. perr)
      end
    elseif err == "stopped" then
      return
    end
  end
end

return r
