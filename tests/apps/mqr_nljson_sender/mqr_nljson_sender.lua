-- mqr_nljson_sender: posts as the original's mqr_sender does (an nljson value, its only form
-- of message there), then the same value's JSON text as a string, then an nljson array
-- through the module function; a plain Lua table is still refused (encode it first). A value
-- nested deeper than a copy may go is answered nil, "too big"; what the post of it returned
-- goes to "nljson.sent".
local t = {}

t.run = function()
  local q = mqr.create("nljson.pipe")
  local v = nljson.decode([[{"message": ["Hello World", 7, 2.5, null, {}, [], {"k": [1, 2]}],
    "flag": true, "bytes": "\u00e9"}]])
  assert(q:post(v) == true)
  assert(q:post(tostring(v)) == true)
  assert(mqr:post("nljson.pipe", nljson.decode('[1, "two"]')) == true)
  assert(mqr:post("nljson.third", "posted")) -- the receiver's try_recv waits for this
  local ok, err = pcall(q.post, q, { 1, 2 })
  assert(not ok and err:find("string or nljson object or array expected, got table", 1, true), tostring(err))
  local deep = nljson.decode("[]")
  local cur = deep
  for _ = 1, 70 do
    cur[1] = nljson.decode("[]")
    cur = cur[1]
  end
  local ok2, err2 = q:post(deep)
  assert(mqr:post("nljson.sent", "deep " .. tostring(ok2) .. " " .. tostring(err2)))
end

return t
