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
-- members in them; an instance has at most chat.max_rooms rooms it created and has not
-- removed, and a /join that would create one more is answered "error: too many rooms".
local words = require("words")

local chat = {}
chat.__index = chat

chat.max_rooms = 1000

-- The longest chat line, in bytes: a room's members each get a copy, and its JSON escaping
-- may take six bytes a byte.
chat.max_text = 4096

-- The rooms this instance created and has not removed (a room another instance removed is
-- forgotten here when a /join finds it gone, or when this instance removes it again).
local created, n_created = {}, 0

-- Per-connection state, keyed by handler: a connection always reaches the same instance.
local members = {}

local function reply(handler, text)
  return ws:send(handler, 1, text)
end

-- Removes the room if no one is in it any more (members of every instance count).
local function remove_if_empty(room)
  if bcast:remove("chat:" .. room) and created[room] then
    created[room] = nil
    n_created = n_created - 1
  end
end

local function leave(handler)
  local m = members[handler]
  if m and m.room then
    bcast:unsubscribe("chat:" .. m.room, handler)
    local room = m.room
    m.room = nil
    remove_if_empty(room)
    return room
  end
end

-- Subscribes to the room's channel, creating it when there is none.
local function enter(handler, room)
  local id = "chat:" .. room
  local ok, err = bcast:subscribe(id, handler)
  if ok or err ~= "no such channel" then
    return ok, err
  end
  if not created[room] and n_created >= chat.max_rooms then
    return nil, "too many rooms"
  end
  -- Counted once the channel exists: a refused create ("too many channels" in the process)
  -- does not use up one of max_rooms.
  local made, cerr = bcast:create(id)
  if not made then
    return nil, cerr
  end
  if not created[room] then
    created[room] = true
    n_created = n_created + 1
  end
  -- Another instance may remove it in between if it is empty: then it is "no such channel".
  return bcast:subscribe(id, handler)
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
    remove_if_empty(m.room)
  end
end

chat.onShutdown = function()
  print("chat::onShutdown")
end

return chat
