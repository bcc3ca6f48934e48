-- words: tiny text helpers shared by the apps (lua/lib is on every service's package.path).
local words = {}

-- Splits "cmd rest of line" into "cmd", "rest of line" (rest may be "").
function words.command(line)
  local cmd, rest = line:match("^(%S+)%s*(.*)$")
  return cmd or "", rest or ""
end

-- True when name is a usable room name: 1-32 letters, digits, '_' or '-'.
function words.valid_name(name)
  return #name >= 1 and #name <= 32 and name:match("^[%w_%-]+$") ~= nil
end

-- Escapes a string for a JSON string literal.
function words.json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

return words
