local broken = {}

broken.onMessage = function(handler, opcode, message
  return true
end

return broken
