-- mqr_sender (standalone): once a second, posts "<instance>:<counter>:<time ms>" to the mqr
-- queue "testpipe". Needs preload = ["mqr", "nap", "time"] and depends on mqr_receiver, so the
-- receiver starts first and, at shutdown, stops last and drains what this one posted.
local mqr_sender = {}
mqr_sender.__index = mqr_sender

mqr_sender.queue_name = "testpipe"

mqr_sender.init = function()
  -- Creating an existing queue returns it; the capacity comes from mqr_capacity in lapps.json.
  local queue, err = mqr:create(mqr_sender.queue_name)
  -- init's error fails the start with this reason in the log.
  mqr_sender.queue = assert(queue, "mqr_sender: no queue " .. mqr_sender.queue_name .. ": " .. tostring(err))
end

mqr_sender.run = function()
  local n = nap:new()
  local counter = 0
  while not must_stop() do
    counter = counter + 1
    -- Wait up to a second for room: a full queue is reported, never dropped silently.
    local ok, err = mqr_sender.queue:post(
      string.format("%d:%d:%d", instance_id, counter, time.now()), 1)
    if not ok then
      print("mqr_sender: message " .. counter .. " not accepted: " .. err)
    end
    n:sleep(1)
  end
end

mqr_sender.onShutdown = function()
  print("mqr_sender: stopped")
end

return mqr_sender
