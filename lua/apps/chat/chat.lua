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
-- by the IOWorkers to every member, whichever instance or worker they are on. A room whose
-- last member leaves (or disconnects) is removed, so rooms are at most as many as the
-- members in them; the members of an instance are in at most chat.max_rooms rooms, and a
-- /join that would make one more is answered "error: too many rooms".
local words = require("words")

local chat = {}
chat.__index = chat

chat.max_rooms = 1000

-- The longest chat line, in bytes: a room's members each get a copy, and its JSON escaping
-- may take six bytes a byte.
chat.max_text = 4096

-- This instance's members per room, and the rooms they are in (its own count: which
-- instance created a room, or removes it, does not matter).
local here, n_rooms = {}, 0

-- Per-connection state, keyed by handler: a connection always reaches the same instance.
local members = {}

local function reply(handler, text)
  return ws:send(handler, 1, text)
end

-- One member of this instance more (+1) or fewer (-1) in the room.
local function count(room, by)
  local n = (here[room] or 0) + by
  if n == 0 then
    here[room], n_rooms = nil, n_rooms - 1
  else
    if not here[room] then
      n_rooms = n_rooms + 1
    end
    here[room] = n
  end
end

-- Leaves the member's room (the channel goes once no member of any instance is in it).
local function leave(handler)
  local m = members[handler]
  if m and m.room then
    local room = m.room
    bcast:unsubscribe("chat:" .. room, handler)
    m.room = nil
    count(room, -1)
    bcast:remove("chat:" .. room)
    return room
  end
end

-- Subscribes to the room's channel, creating it when there is none. Another instance may
-- remove a channel it finds empty between our create and our subscribe: tried again, a few
-- times. A channel made here that could not be joined goes again if it is empty.
local function enter(handler, room)
  if not here[room] and n_rooms >= chat.max_rooms then
    return nil, "too many rooms"
  end
  local id = "chat:" .. room
  local ok, err = bcast:subscribe(id, handler)
  for _ = 1, 3 do
    if ok or err ~= "no such channel" then
      break
    end
    local made, cerr = bcast:create(id)
    if not made then
      return nil, cerr
    end
    ok, err = bcast:subscribe(id, handler)
  end
  if not ok then
    bcast:remove(id)
    return nil, err
  end
  count(room, 1)
  return true
end

local commands = {}

commands["/join"] = function(handler, m, room)
  if not words.valid_name(room) then
    return reply(handler, "error: bad room name")
  end
  if m.room == room then
    return reply(handler, "joined " .. room)
  end
  -- The new room first: a refused /join leaves the member where it was.
  local ok, err = enter(handler, room)
  if not ok then
    return reply(handler, "error: " .. err)
  end
  leave(handler)
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
  -- The host already dropped the bcast subscriptions of a closed connection: its room goes
  -- if it was the last one in it.
  local m = members[handler]
  members[handler] = nil
  if m and m.room then
    count(m.room, -1)
    bcast:remove("chat:" .. m.room)
  end
end

chat.onShutdown = function()
  print("chat::onShutdown")
end

return chat
