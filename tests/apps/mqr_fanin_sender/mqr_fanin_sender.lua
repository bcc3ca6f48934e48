-- mqr_fanin_sender: each instance posts "<instance>:<seq>" for seq = 1..2000 to "fanin",
-- waiting for room when the small queue is full; a post that is not accepted is reported.
local s = {}

s.run = function()
  for seq = 1, 2000 do
    local ok, err = mqr:post("fanin", instance_id .. ":" .. seq, 30)
    if not ok then
      mqr:post("fanin.out", "error sender " .. instance_id .. " " .. seq .. " " .. err, 30)
      return
    end
  end
end

return s
