-- mqr_many: a standalone test app (tests/mqr_limits.rs) that creates queues of one slot until
-- the process refuses one, then posts to "many.report" how many it made and why it stopped,
-- and what a post to a new queue name and to one it made answer. Needs preload ["mqr"].
local app = {}

app.run = function()
  local n, err = 0, nil
  while true do
    local q, e = mqr:create("many." .. n, 1)
    if not q then
      err = e
      break
    end
    n = n + 1
  end
  local new, new_err = mqr:post("many.new", "x")
  local old, old_err = mqr:post("many.0", "x")
  assert(mqr:post("many.report", string.format("created %d (%s); new %s %s; existing %s %s",
    n, err, tostring(new), tostring(new_err), tostring(old), tostring(old_err))))
end

return app
