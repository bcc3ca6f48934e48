-- benchmark (standalone, auto_start false): opens N cws client connections to the echo
-- service, keeps one message in flight on each (every echo is sent back at once) and prints
-- the messages received per second. Needs preload = ["cws", "nap", "time"].
--
-- Settings: a global table `benchmark_config` (set by a wrapper app), else the environment
-- (BENCHMARK_URL, BENCHMARK_CONNECTIONS, BENCHMARK_SIZE), else the defaults below.
-- `benchmark_config.report_queue` names an mqr queue that gets each per-second rate
-- (needs "mqr" in preload); `insecure`/`ca_file` are passed to cws:new for wss:// URLs.
-- One instance holds at most 4096 cws connections, and its connections to one server connect
-- one at a time (RFC 6455 4.1): many take a while to open. How connections ended is printed
-- once a second, one line per kind.
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
  local open, received = 0, 0
  -- How connections ended since the last report, by what was said: a server that stops or
  -- crashes ends hundreds at once, which would be as many lines each.
  local ended, ended_order = {}, {}
  local function note_end(what)
    if not ended[what] then
      ended[what] = 0
      ended_order[#ended_order + 1] = what
    end
    ended[what] = ended[what] + 1
  end
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
    onerror = function(_, err)
      note_end("failed: " .. err)
    end,
    onclose = function(handler, code)
      if handlers[handler] == "open" then
        open = open - 1
      end
      if code == 1001 then
        -- The server is going away (stopping, or this benchmark's own server stopping
        -- before this service).
        note_end("closed by the server going away (1001)")
      elseif not must_stop() then
        -- E.g. 1009: BENCHMARK_SIZE is past the service's max_inbound_message_size.
        note_end("closed (" .. tostring(code) .. ")")
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
  local refused = {}
  for _ = 1, benchmark.connections do
    local handler, err = cws:new(benchmark.url, callbacks)
    if handler then
      handlers[handler] = "connecting"
    else
      -- E.g. "too many connections": an instance holds at most 4096.
      refused[err] = (refused[err] or 0) + 1
    end
  end
  for err, n in pairs(refused) do
    print("benchmark: cannot connect to " .. benchmark.url .. " (" .. n .. " time(s)): " .. err)
  end
  local report = conf.report_queue and rawget(_G, "mqr")
  local last = time.monotonic()
  while not must_stop() do
    cws:eventLoop(0.1)
    local now = time.monotonic()
    if now - last >= 1000 then
      local rate = received * 1000 / (now - last)
      print(string.format("benchmark: %d connection(s) open, %.0f messages/s", open, rate))
      for _, what in ipairs(ended_order) do
        print("benchmark: " .. ended[what] .. " connection(s) " .. what)
      end
      ended, ended_order = {}, {}
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
