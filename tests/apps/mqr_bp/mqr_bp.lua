-- mqr_bp: back-pressure on a queue of capacity 2, reported line by line to "bp.report":
-- "checks ok" (argument and empty-queue answers), "full <err>" (non-blocking post refused),
-- "timeout <err>" (a short blocking post gives up), then the result of a long blocking post,
-- which succeeds once the test takes a message out.
local t = {}

local function report(line)
  assert(mqr:post("bp.report", line))
end

t.run = function()
  local q = mqr.create("bp", 2) -- the original's dot form works too
  assert(q:capacity() == 2 and q:name() == "bp")
  local ok, err = mqr:post("bp", "x", -1)
  assert(ok == nil and err == "bad timeout", tostring(err))
  assert(mqr:poll("bp.empty") == nil)
  assert(mqr:poll("bp.polled-only") == nil) -- and does not create it
  assert(mqr:size("bp.never-created") == 0)
  local m, e = mqr:receive("bp.empty", 0.01)
  assert(m == nil and e == "timeout", tostring(e))
  assert(not pcall(mqr.post, mqr, "bp", {}), "a table message is a programming error")
  report("checks ok")
  assert(q:post("a") == true)
  assert(mqr:post("bp", "b") == true)
  assert(q:size() == 2)
  local ok1, err1 = mqr:post("bp", "c")
  report("full " .. tostring(ok1) .. " " .. tostring(err1))
  local ok2, err2 = q:post("c", 0.05)
  report("timeout " .. tostring(ok2) .. " " .. tostring(err2))
  local ok3, err3 = q:post("c", 30)
  report("posted " .. tostring(ok3) .. " " .. tostring(err3))
end

return t
