-- chat (RAW, /chat): rooms over bcast. Needs preload = ["bcast"].
--
-- Protocol (text frames, one command per message):
--   "/join <room>"   leave the current room (if any) and join <room>; answer "joined <room>"
--   "/nick <name>"   set the name shown with your messages; answer "nick <name>"
--   "/leave"         leave the current room; answer "left <room>"
--   "/time"          also receive the time_broadcast ticks (channel 1000); answer "time on"
--   "/quit"          the server closes the connection (1000)
--   anything else    broadcast to everyone in your room (you included) as
--                    {"room":"<room>","from":"<nick>","text":"<message>"}; at most
--                    chat.max_text bytes ("error: message too long" beyond)
-- Errors are answered as "error: <reason>". Binary messages are refused with "error: text only".
--
-- Each room is a bcast channel named "chat:<room>": a message is framed once and fanned out
-- by the IOWorkers to every member, whichever instance or worker they are on. bcast channels
-- are never removed, so an instance creates at most chat.max_rooms of them; a /join beyond
-- that to a room it has not created is answered "error: too many rooms".
local words = require("words")

local chat = {}
chat.__index = chat

chat.max_rooms = 1000

-- The longest chat line, in bytes: a room's members each get a copy, and its JSON escaping
-- may take six bytes a byte.
chat.max_text = 4096

-- The rooms this instance created (channels stay for the life of the process).
local created, n_created = {}, 0

-- Per-connection state, keyed by handler: a connection always reaches the same instance.
local members = {}

local function reply(handler, text)
  return ws:send(handler, 1, text)
end

local function leave(handler)
  local m = members[handler]
  if m and m.room then
    bcast:unsubscribe("chat:" .. m.room, handler)
    local room = m.room
    m.room = nil
    return room
  end
end

local commands = {}

commands["/join"] = function(handler, m, room)
  if not words.valid_name(room) then
    return reply(handler, "error: bad room name")
  end
  if not created[room] then
    if n_created >= chat.max_rooms then
      return reply(handler, "error: too many rooms")
    end
    -- Counted once the channel exists: a refused create ("too many channels" in the
    -- process) does not use up one of max_rooms.
    local ok, err = bcast:create("chat:" .. room)
    if not ok then
      return reply(handler, "error: " .. err)
    end
    created[room] = true
    n_created = n_created + 1
  end
  leave(handler)
  local ok, err = bcast:subscribe("chat:" .. room, handler)
  if not ok then
    return reply(handler, "error: " .. err)
  end
  m.room = room
  return reply(handler, "joined " .. room)
end

commands["/nick"] = function(handler, m, name)
  if not words.valid_name(name) then
    return reply(handler, "error: bad nick")
  end
  m.nick = name
  return reply(handler, "nick " .. name)
end

commands["/leave"] = function(handler, m)
  local room = leave(handler)
  if not room then
    return reply(handler, "error: not in a room")
  end
  return reply(handler, "left " .. room)
end

commands["/time"] = function(handler, m)
  local ok, err = bcast:subscribe(1000, handler)
  if not ok then
    return reply(handler, "error: " .. err)
  end
  return reply(handler, "time on")
end

chat.onStart = function()
  print("chat::onStart")
end

chat.onMessage = function(handler, opcode, message)
  local m = members[handler]
  if not m then
    m = { nick = "guest" .. tostring(handler) } -- handlers are unique, and exact as text
    members[handler] = m
  end
  if opcode ~= 1 then
    reply(handler, "error: text only")
    return true
  end
  local cmd, rest = words.command(message)
  if cmd == "/quit" then
    return false
  end
  local f = commands[cmd]
  if f then
    f(handler, m, rest)
    return true
  end
  if not m.room then
    reply(handler, "error: /join a room first")
    return true
  end
  if #message > chat.max_text then
    reply(handler, "error: message too long (at most " .. chat.max_text .. " bytes)")
    return true
  end
  bcast:send("chat:" .. m.room, 1, string.format('{"room":%s,"from":%s,"text":%s}',
    words.json_string(m.room), words.json_string(m.nick), words.json_string(message)))
  return true
end

chat.onDisconnect = function(handler)
  -- The host already dropped the bcast subscriptions of a closed connection.
  members[handler] = nil
end

chat.onShutdown = function()
  print("chat::onShutdown")
end

return chat
