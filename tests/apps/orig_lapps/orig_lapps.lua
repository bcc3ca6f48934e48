-- orig_lapps: a LAppS service in the original's forms, configured with `"preload": []`:
-- method "subscribe" subscribes the client to channel 1000 (bcast without preloading it),
-- answers with a table and then pushes an OON built as the original's apps built them (an
-- nljson value with `status = 1`).
local app = {}

app.onStart = function() end
app.onDisconnect = function() end
app.onShutdown = function() end

app.onMessage = function(handler, msg_type, message)
  if message.method == "subscribe" then
    assert(bcast:subscribe(1000, handler))
    assert(ws:send(handler, { cid = 0, status = 1, result = { "ok" } }))
    assert(ws:send(handler, nljson.decode('{"cid": 3, "status": 1, "message": ["welcome"]}')))
  end
  return true
end

return app
