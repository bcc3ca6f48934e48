-- mqr_sd_sender: posts to "sd" until must_stop(), counting the posts that were accepted, and
-- reports "accepted <n>" to "sd.report" at shutdown.
local s = { accepted = 0 }

s.run = function()
  local seq = 0
  while not must_stop() do
    local ok = mqr:post("sd", instance_id .. ":" .. (seq + 1), 0.05)
    if ok then
      seq = seq + 1
      s.accepted = s.accepted + 1
    end
  end
end

s.onShutdown = function()
  assert(mqr:post("sd.report", "accepted " .. s.accepted))
end

return s
