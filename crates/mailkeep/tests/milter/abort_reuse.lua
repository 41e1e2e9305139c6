-- Message A is aborted after two RCPTs; messages B and C follow on the same
-- connection. Nothing of A may reach the archive or leak into B or C.
-- miltertest -D port=P -s abort_reuse.lua
local port = port or "8894"
local function check(err, what) if err ~= nil then error(what .. ": " .. tostring(err)) end end
local function want(conn, code, what)
  local r = mt.getreply(conn)
  if r ~= code then error(what .. ": reply " .. string.char(r) .. ", wanted " .. string.char(code)) end
end
local function send_msg(conn, qid, rcpts, subject)
  check(mt.macro(conn, SMFIC_MAIL, "i", qid), "macro mail")
  check(mt.mailfrom(conn, "<carol@example.org>"), "mailfrom")
  want(conn, SMFIR_CONTINUE, "mailfrom")
  for _, r in ipairs(rcpts) do check(mt.rcptto(conn, r), "rcpt"); want(conn, SMFIR_CONTINUE, "rcpt") end
  check(mt.header(conn, "Subject", subject), "header"); want(conn, SMFIR_CONTINUE, "header")
  check(mt.eoh(conn), "eoh"); want(conn, SMFIR_CONTINUE, "eoh")
  check(mt.bodystring(conn, subject .. " body\r\n"), "body"); want(conn, SMFIR_CONTINUE, "body")
  check(mt.eom(conn), "eom"); want(conn, SMFIR_CONTINUE, "eom")
end
local function main()
  local conn = mt.connect("inet:" .. port .. "@127.0.0.1", 40, 0.25)
  if conn == nil then error("mt.connect failed") end
  check(mt.negotiate(conn, 6, nil, nil), "negotiate")
  check(mt.conninfo(conn, "mx.example.net", "192.0.2.7"), "conninfo"); want(conn, SMFIR_CONTINUE, "conninfo")
  check(mt.helo(conn, "mx.example.net"), "helo"); want(conn, SMFIR_CONTINUE, "helo")
  check(mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "bob", "i", "QIDA"), "macro mail A")
  check(mt.mailfrom(conn, "<alice@example.org>"), "mailfrom A"); want(conn, SMFIR_CONTINUE, "mailfrom A")
  check(mt.rcptto(conn, "<aborted1@example.com>"), "rcpt A1"); want(conn, SMFIR_CONTINUE, "rcpt A1")
  check(mt.rcptto(conn, "<aborted2@example.com>"), "rcpt A2"); want(conn, SMFIR_CONTINUE, "rcpt A2")
  check(mt.header(conn, "Subject", "msg A"), "header A"); want(conn, SMFIR_CONTINUE, "header A")
  check(mt.abort(conn), "abort")
  send_msg(conn, "QIDB", {"<b1@example.com>"}, "msg B")
  send_msg(conn, "QIDC", {"<c1@example.com>", "<c2@example.com>"}, "msg C")
  mt.disconnect(conn)
  mt.echo("PASS abort_reuse")
end
local ok, e = pcall(main)
if not ok then mt.echo("FAIL: " .. tostring(e)); error(e) end
