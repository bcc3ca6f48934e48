-- benchmark (standalone, auto_start false): opens N cws client connections to the echo
-- service, keeps one message in flight on each (every echo is sent back at once) and prints
-- the messages received per second. Needs preload = ["cws", "nap", "time"].
--
-- Settings: a global table `benchmark_config` (set by a wrapper app), else the environment
-- (BENCHMARK_URL, BENCHMARK_CONNECTIONS, BENCHMARK_SIZE), else the defaults below.
-- `benchmark_config.report_queue` names an mqr queue that gets each per-second rate
-- (needs "mqr" in preload); `insecure`/`ca_file` are passed to cws:new for wss:// URLs.
local conf = rawget(_G, "benchmark_config") or {}

local benchmark = {}
benchmark.__index = benchmark

benchmark.url = conf.url or os.getenv("BENCHMARK_URL") or "ws://127.0.0.1:5083/echo"
benchmark.connections = tonumber(conf.connections or os.getenv("BENCHMARK_CONNECTIONS")) or 100
benchmark.size = tonumber(conf.size or os.getenv("BENCHMARK_SIZE")) or 64

benchmark.init = function()
end

benchmark.run = function()
  local payload = string.rep("x", benchmark.size)
  local open, received, going_away = 0, 0, 0
  local handlers = {}
  local callbacks = {
    onopen = function(handler)
      open = open + 1
      local ok, err = cws:send(handler, payload, 2)
      if not ok then
        print("benchmark: send on " .. handler .. " failed: " .. err)
      end
    end,
    onmessage = function(handler, message, opcode)
      received = received + 1
      local ok, err = cws:send(handler, message, opcode)
      -- "closed": the server's Close came in the same read (its onclose is next).
      if not ok and err ~= "closed" then
        print("benchmark: send on " .. handler .. " failed: " .. err)
      end
    end,
    onerror = function(handler, err)
      print("benchmark: connection " .. handler .. ": " .. err)
    end,
    onclose = function(handler, code)
      if handlers[handler] == "open" then
        open = open - 1
      end
      if code == 1001 then
        -- The server is going away (stopping, or this benchmark's own server stopping
        -- before this service): one line for all of them, below.
        going_away = going_away + 1
      elseif not must_stop() then
        -- E.g. 1009: BENCHMARK_SIZE is past the service's max_inbound_message_size.
        print("benchmark: connection " .. handler .. " closed (" .. tostring(code) .. ")")
      end
      handlers[handler] = nil
    end,
    insecure = conf.insecure,
    ca_file = conf.ca_file,
  }
  local onopen = callbacks.onopen
  callbacks.onopen = function(handler)
    handlers[handler] = "open"
    onopen(handler)
  end
  for _ = 1, benchmark.connections do
    local handler, err = cws:new(benchmark.url, callbacks)
    if handler then
      handlers[handler] = "connecting"
    else
      print("benchmark: cannot connect to " .. benchmark.url .. ": " .. err)
    end
  end
  local report = conf.report_queue and rawget(_G, "mqr")
  local last = time.monotonic()
  while not must_stop() do
    cws:eventLoop(0.1)
    local now = time.monotonic()
    if now - last >= 1000 then
      local rate = received * 1000 / (now - last)
      print(string.format("benchmark: %d connection(s) open, %.0f messages/s", open, rate))
      if going_away > 0 then
        print("benchmark: " .. going_away .. " connection(s) closed by the server going away (1001)")
        going_away = 0
      end
      if report then
        report:post(conf.report_queue, string.format("%.0f", rate))
      end
      received, last = 0, now
    end
  end
  -- Close cleanly, giving the server a moment to answer the close handshakes.
  for handler in pairs(handlers) do
    cws:close(handler, 1001)
  end
  local deadline = time.monotonic() + 1000
  while cws:count() > 0 and time.monotonic() < deadline do
    cws:eventLoop(0.05)
  end
end

return benchmark
