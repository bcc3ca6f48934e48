-- lapps_views: a LAppS-protocol test app (tests/lapps_values.rs) that answers through each way
-- an app can hold a message: the view it receives, a changed view, a tree copy, plain Lua.
local app = {}

local methods = {}

-- The params as they came (a view into the request).
methods.echo = function(handler, message)
  return ws:send_response(handler, message.params)
end

-- The first element replaced through one view, answered through another.
methods.mutate = function(handler, message)
  local p = message.params
  p[1] = "changed"
  return ws:send_response(handler, message.params)
end

-- A copy that went through CBOR and a fresh tree.
methods.copy = function(handler, message)
  return ws:send_response(handler, nljson.from_cbor(nljson.to_cbor(message.params)))
end

-- What Lua sees of the params.
methods.shape = function(handler, message)
  local p = message.params
  return ws:send_response(handler, { nljson.typename(p), #p, tostring(p) })
end

-- The whole response as a table for ws:send.
methods.send = function(handler, message)
  return ws:send(handler, { cid = 0, status = 1, result = message.params })
end

-- Whether send_error and send_oon take a code/cid that is not a whole number (each answer
-- "false" means the call raised, as a programming error does).
methods.strict = function(handler, message)
  local r = {}
  r[1] = tostring((pcall(ws.send_error, ws, handler, 1.5, "half")))
  r[2] = tostring((pcall(ws.send_oon, ws, handler, 2.5, { 1 })))
  r[3] = tostring((pcall(ws.send_oon, ws, handler, -1, { 1 })))
  r[4] = tostring((pcall(ws.send_error, ws, handler, "x", "text")))
  return ws:send_response(handler, r)
end

-- An OON on channel 2^63 (a Lua float past 2^53, still a channel), then what it answered.
methods.far = function(handler, message)
  local ok, err = ws:send_oon(handler, 2^63, { "far" })
  return ws:send_response(handler, { tostring(ok), tostring(err) })
end

-- This connection's handler.
methods.whoami = function(handler)
  return ws:send_response(handler, { handler })
end

-- Each LAppS send at the handler in params[1] (a RAW connection in the test), then a raw
-- send at this LAppS connection: what each answered, as "<value> <err>".
methods.cross = function(handler, message)
  local h = message.params[1]
  local r = {}
  local function try(f, ...)
    local v, err = f(...)
    r[#r + 1] = tostring(v) .. " " .. tostring(err)
  end
  try(ws.send_response, ws, h, { 1 })
  try(ws.send_error, ws, h, -32000, "x")
  try(ws.send_oon, ws, h, 5, { 1 })
  try(ws.send, ws, h, { cid = 5, message = { 1 } })
  try(ws.send, ws, handler, 1, "raw text to a LAppS client")
  -- Channel 0 is a programming error whatever the handler: it raises.
  local ok, e = pcall(ws.send_oon, ws, h, 0, { 1 })
  r[#r + 1] = tostring(ok) .. " " .. (string.match(tostring(e), "channel 0 is the command channel") or tostring(e))
  return ws:send_response(handler, r)
end

-- Programming errors at the handler in params[1] (live, RAW or stale alike): each call must
-- raise; "raised", or what it returned instead.
methods.misuse = function(handler, message)
  local h = message.params[1]
  local r = {}
  local function try(f, ...)
    local ok, v, err = pcall(f, ...)
    r[#r + 1] = ok and ("returned " .. tostring(v) .. " " .. tostring(err)) or "raised"
  end
  try(ws.send_response, ws, h, "not an array")
  try(ws.send_response, ws, h, nljson.decode('{"a": 1}'))
  try(ws.send_error, ws, h, -32000, "x", print)
  try(ws.send_oon, ws, h, 5, "not an array")
  try(ws.send_oon, ws, h, 5, nljson.decode('{"a": 1}'))
  try(ws.send, ws, h, { cid = 0, status = 1, result = "not an array" })
  try(ws.send, ws, h, { cid = 5, message = "not an array" })
  return ws:send_response(handler, r)
end

-- bcast (needs preload = ["bcast"]): subscribe this connection to channel params[1] (made
-- if needed), or send an OON on it; answers what bcast answered.
methods.sub = function(handler, message)
  bcast:create(message.params[1])
  return ws:send_response(handler, { tostring(bcast:subscribe(message.params[1], handler)) })
end

methods.oon_bcast = function(handler, message)
  local ch = message.params[1]
  return ws:send_response(handler, { bcast:send(ch, { cid = ch, message = { "tick" } }) })
end

methods.fail = function()
  error("fail was called")
end

-- The element of the params at the position params[1] names: past the 32nd, reading it
-- builds the message's tree.
methods.at = function(handler, message)
  local p = message.params
  return ws:send_response(handler, { p[p[1]] })
end

-- `at`, keeping the params (from the tree `at` built) after the message is gone; `forget`
-- lets them go.
local kept = {}
methods.keep = function(handler, message)
  local p = message.params
  local x = p[p[1]]
  kept[#kept + 1] = message.params
  return ws:send_response(handler, { x })
end

-- Decodes a JSON array of params[1] zeros: {true, #v} or {false, the error}.
methods.decode = function(handler, message)
  local n = message.params[1]
  local v, err = nljson.decode("[" .. string.rep("0,", n - 1) .. "0]")
  if v == nil then
    return ws:send_response(handler, { false, err })
  end
  return ws:send_response(handler, { true, #v })
end

-- Decodes params[2] zeros nested params[1] arrays deep and encodes them with an indent of
-- params[3]: {true, #text} or {false, the error}.
methods.pretty = function(handler, message)
  local depth, n, indent = message.params[1], message.params[2], message.params[3]
  local text = string.rep("[", depth) .. string.rep("0,", n - 1) .. "0" .. string.rep("]", depth)
  local v = assert(nljson.decode(text))
  local s, err = nljson.encode_pretty(v, indent)
  if s == nil then
    return ws:send_response(handler, { false, err })
  end
  return ws:send_response(handler, { true, #s })
end

-- Appends params[1] numbers to a new array one assignment at a time: {true, #a} or
-- {false, the error, #a when it was raised}.
methods.grow = function(handler, message)
  local n = message.params[1]
  local a = nljson.array()
  local ok, err = pcall(function()
    for i = 1, n do
      a[i] = i
    end
  end)
  if ok then
    return ws:send_response(handler, { true, #a })
  end
  return ws:send_response(handler, { false, tostring(err), #a })
end

methods.forget = function(handler)
  kept = {}
  return ws:send_response(handler, {})
end

-- Keeps whole messages (their views, so their bytes) until `forget_messages`.
local kept_messages = {}
methods.keep_message = function(handler, message)
  kept_messages[#kept_messages + 1] = message
  return ws:send_response(handler, { #kept_messages })
end

methods.forget_messages = function(handler)
  kept_messages = {}
  return ws:send_response(handler, {})
end

-- Answers twice, each way an app can: the second answer is refused (what each refusal said
-- is kept for `refusals`).
local refusals = {}
methods.twice = function(handler)
  ws:send_response(handler, { "first" })
  local sends = {
    function() return ws:send_response(handler, { "second" }) end,
    function() return ws:send_error(handler, -32000, "second") end,
    function() return ws:send(handler, { cid = 0, status = 1, result = { "second" } }) end,
  }
  refusals = {}
  for i, send in ipairs(sends) do
    local ok, err = send()
    refusals[i] = tostring(ok) .. " " .. tostring(err)
  end
end

methods.refusals = function(handler)
  return ws:send_response(handler, refusals)
end

-- Answers (each way an app can), then fails: the request has had its one response.
methods.answer_then_fail = function(handler, message)
  local how = message.params[1]
  if how == "response" then
    ws:send_response(handler, { "answered" })
  elseif how == "error" then
    ws:send_error(handler, -32000, "answered with an error")
  else
    ws:send(handler, { cid = 0, status = 1, result = { "answered" } })
  end
  error("failed after answering")
end

app.onMessage = function(handler, msg_type, message)
  if msg_type == 1 or msg_type == 2 then
    return true
  end
  local m = methods[message.method]
  if m == nil then
    ws:send_error(handler, -32601, "method not found")
  else
    m(handler, message)
  end
  return true
end

return app
