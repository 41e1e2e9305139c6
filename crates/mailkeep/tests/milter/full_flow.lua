-- One complete message as Postfix would send it, with the SASL login in
-- {auth_authen} and three recipients of which r3 is only in the envelope.
-- miltertest -D port=P [-D version=2] [-D expect=tempfail|continue] [-D header=1] -s full_flow.lua
local port = port or "8894"
local version = tonumber(version or "6")
local expect = expect or "continue"
local function check(err, what) if err ~= nil then error(what .. ": " .. tostring(err)) end end
local function want(conn, code, what)
  local r = mt.getreply(conn)
  if r ~= code then error(what .. ": reply " .. string.char(r) .. ", wanted " .. string.char(code)) end
end

local function main()
  local conn = mt.connect("inet:" .. port .. "@127.0.0.1", 40, 0.25)
  if conn == nil then error("mt.connect failed") end
  local acts, steps = nil, nil
  if version == 2 then acts = 0x3F; steps = 0x7F end  -- SMFI_V2_ACTS / SMFI_V2_PROT
  check(mt.negotiate(conn, version, acts, steps), "negotiate v" .. version)
  check(mt.macro(conn, SMFIC_CONNECT, "{client_addr}", "192.0.2.7", "{client_name}", "mx.example.net",
                 "{client_port}", "40123"), "macro connect")
  check(mt.conninfo(conn, "mx.example.net", "192.0.2.7"), "conninfo")
  want(conn, SMFIR_CONTINUE, "conninfo")
  check(mt.helo(conn, "helo.example.net"), "helo")
  want(conn, SMFIR_CONTINUE, "helo")
  check(mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "bob", "{auth_type}", "PLAIN", "i", "QID1"), "macro mail")
  check(mt.mailfrom(conn, "<alice@example.org>", "SIZE=1234", "BODY=8BITMIME"), "mailfrom")
  want(conn, SMFIR_CONTINUE, "mailfrom")
  for _, r in ipairs({"<r1@example.com>", "<r2@example.com>", "<r3@example.com>"}) do
    check(mt.rcptto(conn, r), "rcptto " .. r)
    want(conn, SMFIR_CONTINUE, "rcptto " .. r)
  end
  for _, h in ipairs({{"From", "Mallory <ceo@example.org>"}, {"To", "r1@example.com, r2@example.com"},
                      {"Subject", "full flow test"}, {"Message-ID", "<ff1@example.org>"}}) do
    check(mt.header(conn, h[1], h[2]), "header " .. h[1])
    want(conn, SMFIR_CONTINUE, "header " .. h[1])
  end
  check(mt.eoh(conn), "eoh")
  want(conn, SMFIR_CONTINUE, "eoh")
  check(mt.bodystring(conn, "Hello Bob,\r\nthis is the body.\r\n"), "body1")
  want(conn, SMFIR_CONTINUE, "body1")
  check(mt.bodystring(conn, "From the second chunk.\r\n"), "body2")
  want(conn, SMFIR_CONTINUE, "body2")
  check(mt.eom(conn), "eom")
  if expect == "tempfail" then
    want(conn, SMFIR_TEMPFAIL, "eom")
  else
    want(conn, SMFIR_CONTINUE, "eom")
    if header == "1" and not mt.eom_check(conn, MT_HDRADD, "X-Mailkeep-Archived") then
      error("X-Mailkeep-Archived was not added")
    end
  end
  mt.disconnect(conn)
  mt.echo("PASS full_flow v" .. version .. " " .. expect)
end
local ok, e = pcall(main)
if not ok then mt.echo("FAIL: " .. tostring(e)); error(e) end
