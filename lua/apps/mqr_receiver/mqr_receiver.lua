-- mqr_receiver (standalone): prints every message of the mqr queue "testpipe" (posted by
-- mqr_sender). Needs preload = ["mqr", "nap", "time"].
--
-- The loop ends on `nil, "stopped"`, not on must_stop(): at shutdown `receive` keeps returning
-- what is queued and says "stopped" only once the queue is empty, so nothing accepted is lost.
local mqr_receiver = {}
mqr_receiver.__index = mqr_receiver

mqr_receiver.queue_name = "testpipe"

mqr_receiver.run = function()
  local queue, err = mqr:create(mqr_receiver.queue_name)
  assert(queue, "mqr_receiver: no queue " .. mqr_receiver.queue_name .. ": " .. tostring(err))
  local received = 0
  while true do
    local msg, err = queue:receive(1)
    if msg then
      received = received + 1
      local from, counter, sent = msg:match("^(%d+):(%d+):(%d+)$")
      if from then
        print(string.format("mqr_receiver: counter %s from sender #%s, %d ms in transit",
          counter, from, time.now() - tonumber(sent)))
      else
        print("mqr_receiver: " .. msg)
      end
    elseif err == "stopped" then
      break
    end
  end
  print("mqr_receiver: " .. received .. " message(s) received")
end

return mqr_receiver
