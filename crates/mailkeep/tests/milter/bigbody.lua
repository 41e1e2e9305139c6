-- A body of `mib` MiB (default 50) in chunks of `chunk` bytes (default 64 KiB).
-- miltertest -D port=P [-D chunk=65536] [-D mib=50] [-D pause=SECONDS] -s bigbody.lua
-- `pause` waits after the header, so a test can stop mailkeep mid-message.
-- `-D oversize=tempfail` expects the message (over max_message_size) to be
-- answered TEMPFAIL at end of message.
local port = port or "8894"
local chunk = tonumber(chunk or "65536")
local total = tonumber(mib or "50") * 1024 * 1024
local function check(err, what) if err ~= nil then error(what .. ": " .. tostring(err)) end end
local function want(conn, code, what)
  local r = mt.getreply(conn)
  if r ~= code then error(what .. ": reply " .. string.char(r) .. ", wanted " .. string.char(code)) end
end
local function main()
  local conn = mt.connect("inet:" .. port .. "@127.0.0.1", 40, 0.25)
  if conn == nil then error("mt.connect failed") end
  mt.set_timeout(120)
  check(mt.negotiate(conn, 6, nil, nil), "negotiate")
  check(mt.conninfo(conn, "mx.example.net", "192.0.2.7"), "conninfo"); want(conn, SMFIR_CONTINUE, "conninfo")
  check(mt.helo(conn, "mx.example.net"), "helo"); want(conn, SMFIR_CONTINUE, "helo")
  check(mt.macro(conn, SMFIC_MAIL, "i", "QIDBIG"), "macro")
  check(mt.mailfrom(conn, "<big@example.org>"), "mailfrom"); want(conn, SMFIR_CONTINUE, "mailfrom")
  check(mt.rcptto(conn, "<r@example.com>"), "rcpt"); want(conn, SMFIR_CONTINUE, "rcpt")
  check(mt.header(conn, "Subject", "big"), "header"); want(conn, SMFIR_CONTINUE, "header")
  check(mt.eoh(conn), "eoh"); want(conn, SMFIR_CONTINUE, "eoh")
  if pause ~= nil then mt.sleep(tonumber(pause)) end
  local s = string.rep("x", chunk - 2) .. "\r\n"
  local sent = 0
  while sent < total do
    local piece = s
    if total - sent < chunk then piece = string.sub(s, 1, total - sent) end
    check(mt.bodystring(conn, piece), "bodystring at " .. sent)
    want(conn, SMFIR_CONTINUE, "body at " .. sent)
    sent = sent + #piece
  end
  check(mt.eom(conn), "eom")
  if oversize == "tempfail" then
    want(conn, SMFIR_TEMPFAIL, "eom of an oversized message")
  else
    want(conn, SMFIR_CONTINUE, "eom")
  end
  mt.disconnect(conn)
  mt.echo("PASS bigbody " .. sent)
end
local ok, e = pcall(main)
if not ok then mt.echo("FAIL: " .. tostring(e)); error(e) end
