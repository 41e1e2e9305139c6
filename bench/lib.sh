# Shared by the bench scripts that run a private Postfix (sourced, not run).

# The Postfix daemons a private instance needs (master.cf lines, chroot off).
postfix_services() {
  cat <<'CF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CF
}

# Starts the instance in $WORK/etc; shows why when it does not start.
start_postfix() {
  if ! postfix -c "$WORK/etc" start >"$WORK/postfix-start.log" 2>&1; then
    cat "$WORK/postfix-start.log" >&2
    script -qc "postfix -c $WORK/etc check" /dev/null >&2 || true
    die "postfix start failed"
  fi
}

ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime+stime of a pid
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }        # machine: all but idle, iowait
