-- mqr_nljson_receiver: receives what mqr_nljson_sender posts and reports, to "nljson.report",
-- what each message came back as: an nljson value for a posted nljson value (equal to the
-- original, as JSON text), a string for a string; try_recv (the original's name for poll)
-- gives the third.
local t = {}

local function report(line)
  assert(mqr:post("nljson.report", line))
end

t.run = function()
  local q = mqr.create("nljson.pipe")
  local v = assert(q:recv(20))
  local text = assert(q:recv(20))
  report(type(v) .. " " .. nljson.typename(v) .. " " .. type(text))
  report(tostring(tostring(v) == text) .. " " .. v.message[1] .. " " .. v.message[3])
  -- The received value is a value of this state: it takes assignment like any other.
  v.message[1] = "changed"
  report(v.message[1] .. " " .. tostring(nljson.typename(v.message[5])))
  -- The sender has posted the third message once it says so.
  assert(mqr:receive("nljson.third", 20))
  local a = q:try_recv()
  report(nljson.typename(a) .. " " .. tostring(a))
end

return t
