-- run_fails (tests/binary.rs): a standalone test app whose run() always raises at once, so
-- that its instance spends its time in the restart back-off.
local app = {}

app.run = function()
  error("run_fails fails")
end

return app
