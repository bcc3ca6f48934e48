-- autobahn_client (standalone): drives the Autobahn TestSuite's fuzzing server with `cws`, the
-- client role's conformance run (tests/autobahn/client.sh). It asks the server how many cases
-- there are, runs each one in turn (every message it gets is sent back as it came: text as text,
-- binary as binary), then has the server write its reports and prints "autobahn client: done"
-- ("autobahn client: gave up: ..." when the server gives no case count).
-- Settings from the environment: AUTOBAHN_SERVER (ws:// or wss://HOST:PORT), AUTOBAHN_AGENT,
-- AUTOBAHN_CA_FILE (the wss:// server's certificate).
local server = os.getenv("AUTOBAHN_SERVER") or "ws://127.0.0.1:9001"
local agent = os.getenv("AUTOBAHN_AGENT") or "lapps-cws"
local ca_file = os.getenv("AUTOBAHN_CA_FILE")

local client = {}

client.init = function()
end

-- Opens `path` on the fuzzing server and runs the event loop until that connection has ended;
-- returns the text messages it received (the case count comes as one).
local function session(path, echo)
  local texts, done = {}, false
  local handler, err = cws:new(server .. path, {
    ca_file = server:find("^wss:") and ca_file or nil,
    onmessage = function(h, message, opcode)
      if echo then
        local ok, why = cws:send(h, message, opcode)
        if not ok then
          print("autobahn client: send on " .. path .. " failed: " .. why)
        end
      elseif opcode == 1 then
        texts[#texts + 1] = message
      end
    end,
    onerror = function(_, why)
      -- Expected in cases that send broken frames: the client fails the connection.
      print("autobahn client: " .. path .. ": " .. why)
    end,
    onclose = function()
      done = true
    end,
  })
  if not handler then
    print("autobahn client: cannot open " .. path .. ": " .. err)
    return nil
  end
  while not done and not must_stop() do
    cws:eventLoop(0.1)
  end
  return texts
end

client.run = function()
  local texts = session("/getCaseCount", false)
  local count = texts and tonumber(texts[1])
  if not count then
    print("autobahn client: gave up: no case count from " .. server)
    return
  end
  print("autobahn client: " .. count .. " cases")
  for case = 1, count do
    if must_stop() then
      return
    end
    session("/runCase?case=" .. case .. "&agent=" .. agent, true)
  end
  session("/updateReports?agent=" .. agent, false)
  print("autobahn client: done")
  while not must_stop() do
    nap:new():sleep(0.1)
  end
end

return client
