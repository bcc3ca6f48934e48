-- deep: recursion through C functions (tests/lua_stack.rs). Each command recurses until Lua
-- raises "stack overflow" (or, without room on the thread's own stack, the process dies).
--   "gsub"   string.gsub with a function replacement that calls gsub again
--   "sort"   table.sort with a comparator that sorts again
--   "tostring" a __tostring that calls tostring on itself
--   "cogsub" as gsub, starting a new coroutine (a fresh Lua stack) every 5000 levels
--   anything else: echoed
local app = {}

local function gsub()
  return (("x"):gsub("x", gsub))
end

local function sort()
  table.sort({ 2, 1 }, function(a, b)
    sort()
    return a < b
  end)
end

local levels = 0
local function cogsub()
  levels = levels + 1
  if levels % 5000 == 0 then
    return coroutine.wrap(function()
      return (("x"):gsub("x", cogsub))
    end)()
  end
  return (("x"):gsub("x", cogsub))
end

local looped = setmetatable({}, {})
getmetatable(looped).__tostring = function(self)
  return tostring(self)
end

app.onMessage = function(handler, opcode, message)
  if message == "gsub" then
    gsub()
  elseif message == "sort" then
    sort()
  elseif message == "tostring" then
    tostring(looped)
  elseif message == "cogsub" then
    levels = 0
    cogsub()
  end
  ws:send(handler, opcode, message)
  return true
end

return app
