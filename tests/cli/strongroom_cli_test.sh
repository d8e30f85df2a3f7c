#!/usr/bin/env bash
# System test of the `strongroom` CLI: every process real on 127.0.0.1 (kmsd on a throwaway
# SoftHSM2 token, attached to cored through the relay; cored on SQLite in a temp dir; the CLI
# binary run as five users whose tokens come from development IdPs of two organizations).
#
#   strongroom_cli_test.sh KMSD KMSCTL IDP CORED STRONGROOM direct|relay
#
# The transport is the route every user's CLI takes to the KMS: direct HTTPS, or the core relay;
# the whole conversation must work identically through both. Checked:
#   - alice creates a room with bob, sends text and a file, bob reads both (and gets them live);
#   - alice edits and retracts a message: bob sees both live and in history, not the old text;
#     bob cannot change alice's message; cored's files no longer hold the old ciphertext;
#   - carol, not a member, is refused keys by the KMS and sees nothing at the core;
#   - bob is removed: the room rotates, bob cannot get the new key nor read what follows;
#   - acme's compliance officer reads the room on alice's behalf (from an export and through the
#     core's compliance reads), globex's officer and a non-officer cannot;
#   - a post's JWE taken from cored's database decrypts with python3-jwcrypto given the key from
#     the KMS, and not with any other key.
# Waits are bounded; nothing is timed. Fails (never skips) when anything is missing.
set -euo pipefail
[ $# -eq 6 ] || { echo "usage: $0 KMSD KMSCTL IDP CORED STRONGROOM direct|relay" >&2; exit 64; }
KMSD="$1" KMSCTL="$2" IDP="$3" CORED="$4" CLI="$5" TRANSPORT="$6"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../support/throwaway_kms.sh
. "$here/../support/throwaway_kms.sh"

dir="$(mktemp -d /tmp/sr-cli-test.XXXXXX)"
CORED_PID=""
cleanup() {
  throwaway_kms_stop >/dev/null 2>&1 || true
  [ -n "$CORED_PID" ] && kill -TERM "$CORED_PID" 2>/dev/null && wait "$CORED_PID" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }
# expect_exit CODE WHAT -- command...: the command's exit status must be CODE.
expect_exit() {
  local want="$1" what="$2" got=0
  shift 3
  "$@" >"$dir/out" 2>"$dir/err" || got=$?
  if [ "$got" -ne "$want" ]; then
    fail "$what: exit $got, expected $want; stderr: $(head -c 600 "$dir/err")"
    return 0  # counted; the checks go on, and the logs are shown at the end
  fi
  pass "$what"
}
json() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

throwaway_kms_setup "$dir" "acme globex"
cluster="kms://kms.throwaway.test"

# cored, with the relay for the throwaway KMS and both organizations' IdPs.
(umask 077; openssl rand -hex 32 >"$dir/relay.token")
mkdir -p "$dir/files"
cat >"$dir/core.ini" <<INI
[core]
database = $dir/core.db
files_dir = $dir/files
listen = 127.0.0.1:0
tls_cert = $dir/tls.pem
tls_key = $dir/tls.key
relays = kms1

[relay.kms1]
cluster = $cluster
token_file = $dir/relay.token

[jwt]
issuers = acme, globex

[jwt.acme]
issuer = https://idp.acme.test
org = acme
subject_domains = acme.test
jwks = $dir/idp-acme/jwks.json

[jwt.globex]
issuer = https://idp.globex.test
org = globex
subject_domains = globex.test
jwks = $dir/idp-globex/jwks.json

[compliance]
acme = officer@acme.test
globex = officer@globex.test
INI
# start_cored: cored on core.ini, its log appended to cored.log; waits for its port file.
start_cored() {
  rm -f "$dir/cored.port"
  "$CORED" --config "$dir/core.ini" --port-file "$dir/cored.port" 2>>"$dir/cored.log" &
  CORED_PID=$!
  for _ in $(seq 1 600); do
    [ -s "$dir/cored.port" ] && return 0
    kill -0 "$CORED_PID" 2>/dev/null || { cat "$dir/cored.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "cored did not start" >&2
  exit 1
}
start_cored
core_url="https://127.0.0.1:$(cat "$dir/cored.port")"

# kmsd: attached to cored's relay, with an operations listener to set the organizations'
# compliance officers.
ops_port="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
(umask 077; openssl rand -hex 32 >"$dir/ops.token")
cat >>"$dir/kms.ini" <<INI

[relay]
url = $core_url
ca_file = $dir/ca.pem
token_file = $dir/relay.token

[ops]
listen = 127.0.0.1:$ops_port
tls_cert = $dir/tls.pem
tls_key = $dir/tls.key
token_file = $dir/ops.token
INI
throwaway_kms_start "$dir/kmsd.log"
for org in acme globex; do
  echo "{\"complianceOfficers\": [\"officer@$org.test\"]}" >"$dir/policy-$org.json"
  "$KMSCTL" --config "$dir/kms.ini" ops policy set "$org" --file "$dir/policy-$org.json" >/dev/null
done

# wait_attached: until a message relayed through cored reaches the KMS (not 503 "not connected").
"$IDP" token --dir "$dir/idp-acme" --subject probe@acme.test --audience core --out "$dir/probe.jwt"
wait_attached() {
  local code
  for _ in $(seq 1 600); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$dir/ca.pem" \
      -H "Authorization: Bearer $(cat "$dir/probe.jwt")" -H 'Content-Type: application/jose' \
      --data 'e30.e30.e30' "$core_url/kms/messages?cluster=$cluster" || true)"
    if [ "$code" != 503 ] && [ "$code" != 000 ]; then return 0; fi
    sleep 0.1
  done
  echo "kmsd never attached to cored" >&2
  cat "$dir/kmsd.log" >&2
  exit 1
}
wait_attached

# Each user's CLI profile.
login() {
  local user="$1" org="${1#*@}"
  org="${org%%.*}"
  STRONGROOM_HOME="$dir/home-$user" "$CLI" login --user "$user" --core "$core_url" \
    --ca "$dir/ca.pem" --kms-cluster "$cluster" --kms-url "$KMS_URL" --transport "$TRANSPORT" \
    --token-command "$IDP token --dir $dir/idp-$org --subject $user --audience {audience}" \
    >/dev/null
}
as() {
  local user="$1"
  shift
  STRONGROOM_HOME="$dir/home-$user" "$CLI" "$@"
}
alice=alice@acme.test bob=bob@acme.test carol=carol@acme.test
officer=officer@acme.test outsider=officer@globex.test
for user in "$alice" "$bob" "$carol" "$officer" "$outsider"; do login "$user"; done
pass "five users logged in ($TRANSPORT)"
mode="$(stat -c %a "$dir/home-$alice/profile.ini")"
[ "$mode" = 600 ] || fail "the profile's mode is $mode, not 600"
grep -q "eyJ" "$dir/home-$alice/profile.ini" && fail "the profile holds a token"

# -- alice and bob: text and a file, live and from history.
room="$(as "$alice" --json room create "Vault codes" --with "$bob" | json 'd["id"]')"
[ -n "$room" ] || fail "no room id"
key1="$(as "$alice" --json room list | json '[r["currentKeyUri"] for r in d["rooms"]][0]')"
# bob listens from the room's creation on, so the order of start-up and sends does not matter.
since="$(as "$alice" --json room list | json 'd["rooms"][0]["lastSeq"]')"
as "$bob" --json listen "$room" --since "$since" --count 2 >"$dir/live.json" 2>"$dir/live.err" &
listen_pid=$!
expect_exit 0 "alice sends text" -- as "$alice" send "Vault" "The code changes on Monday."
head -c 2500 /dev/urandom | base64 >"$dir/plans.txt"
expect_exit 0 "alice sends a file" -- as "$alice" --json send-file "$room" "$dir/plans.txt"
file_id="$(json 'd["fileIds"][0]' <"$dir/out")"
expect_exit 0 "bob reads the room" -- as "$bob" read "Vault"
grep -q "The code changes on Monday." "$dir/out" || fail "bob does not read the text"
grep -q "shared plans.txt" "$dir/out" || fail "bob does not see the file"
expect_exit 0 "bob gets the file" -- as "$bob" get-file "$room" "$file_id" -o "$dir/got.txt"
cmp -s "$dir/plans.txt" "$dir/got.txt" || fail "bob's file differs from alice's"
# A large file: the progress bar is drawn when asked for (stderr is no terminal here), not otherwise.
head -c $((3 << 20)) /dev/urandom >"$dir/big.bin"
expect_exit 0 "alice sends a 3 MiB file with a progress bar" -- \
  as "$alice" --json --progress send-file "$room" "$dir/big.bin"
big_id="$(json 'd["fileIds"][0]' <"$dir/out")"
grep -q "upload \[##############################\] 100% 3/3 MiB" "$dir/err" ||
  fail "no finished upload progress bar: $(tr '\r' '\n' <"$dir/err" | tail -n 2)"
expect_exit 0 "bob gets the 3 MiB file with a progress bar" -- \
  as "$bob" get-file "$room" "$big_id" -o "$dir/big.got" --progress
grep -q "download \[#*\.*\] 100% 3/3 MiB" "$dir/err" || fail "no finished download progress bar"
cmp -s "$dir/big.bin" "$dir/big.got" || fail "bob's 3 MiB file differs from alice's"
expect_exit 0 "no progress bar off a terminal by default" -- \
  as "$bob" get-file "$room" "$big_id" -o "$dir/big.got2"
grep -q "download \[" "$dir/err" && fail "a progress bar was drawn on a pipe"
if timeout 120 tail --pid="$listen_pid" -f /dev/null; then
  wait "$listen_pid" || fail "bob's listener failed: $(cat "$dir/live.err")"
  grep -q "The code changes on Monday." "$dir/live.json" || fail "bob's listener missed the text"
  grep -q '"name":"plans.txt"' "$dir/live.json" || fail "bob's listener missed the file"
  pass "bob got both live"
else
  kill "$listen_pid" 2>/dev/null || true
  fail "bob's listener did not get two activities within 120 s"
fi
/usr/bin/python3 - "$dir/core.db" "$room" <<'PY' || fail "the core stores plaintext"
import sqlite3, sys
con = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
rows = con.execute("SELECT content FROM activities WHERE conversation_id = ?", (sys.argv[2],))
assert all("Monday" not in c for (c,) in rows)
title = con.execute("SELECT encrypted_title FROM conversations").fetchone()[0]
assert "Vault" not in title
PY
grep -rq "$(head -c 40 "$dir/plans.txt")" "$dir/files" && fail "the core stores the file in clear"

# -- alice edits a message, then takes it back; bob sees both live and in history.
expect_exit 0 "alice sends a message with a typo" -- as "$alice" --json send "$room" "Meet at the vualt."
typo_seq="$(json 'd["seq"]' <"$dir/out")"
typo_jwe="$(json 'd["content"]' <"$dir/out")"
as "$bob" --json listen "$room" --since "$typo_seq" --count 2 >"$dir/edits.json" 2>"$dir/edits.err" &
edits_pid=$!
expect_exit 77 "bob cannot edit alice's message" -- as "$bob" edit "$room" "$typo_seq" "Bob was here."
grep -q "only the author" "$dir/err" || fail "no author's hint: $(cat "$dir/err")"
expect_exit 64 "SEQ must be a number" -- as "$alice" edit "$room" "x$typo_seq" "Meet at the vault."
expect_exit 66 "an unknown SEQ is not found" -- as "$alice" retract "$room" 999999
expect_exit 0 "alice edits her message" -- as "$alice" edit "$room" "$typo_seq" "Meet at the vault."
grep -q "Edited #$typo_seq" "$dir/out" || fail "edit says nothing: $(cat "$dir/out")"
expect_exit 0 "bob reads the edited message" -- as "$bob" read "$room"
grep -q "#$typo_seq .*: Meet at the vault. (edited " "$dir/out" ||
  fail "history does not show the edited message: $(cat "$dir/out")"
grep -q "edited #$typo_seq: Meet at the vault." "$dir/out" || fail "history shows no edit"
grep -q "vualt" "$dir/out" && fail "bob still reads the old text"
/usr/bin/python3 - "$dir" "$typo_jwe" <<'PY' || fail "the old ciphertext is still in cored's files"
import os, sys
text = sys.argv[2].split("..", 1)[1]
pieces = [text[i:i + 24] for i in range(0, len(text) - 24, 24)]
for name in ("core.db", "core.db-wal"):
    path = os.path.join(sys.argv[1], name)
    data = open(path, "rb").read() if os.path.exists(path) else b""
    assert not any(p.encode() in data for p in pieces), name
PY
# The edit reaches bob's listener before the retraction replaces its text.
for _ in $(seq 1 600); do grep -q '"verb":"edit"' "$dir/edits.json" && break; sleep 0.1; done
expect_exit 0 "alice retracts her message" -- as "$alice" retract "$room" "$typo_seq"
expect_exit 0 "retracting again changes nothing" -- as "$alice" --json retract "$room" "$typo_seq"
[ "$(json 'd["verb"]' <"$dir/out")" = retract ] || fail "a second retraction answers no retraction"
expect_exit 78 "a retracted message cannot be edited" -- as "$alice" edit "$room" "$typo_seq" "Again."
expect_exit 0 "bob reads the retracted message" -- as "$bob" read "$room"
grep -q "#$typo_seq .*: (retracted " "$dir/out" || fail "history shows no tombstone: $(cat "$dir/out")"
grep -q "retracted #$typo_seq" "$dir/out" || fail "history shows no retraction"
grep -q "Meet at the vault" "$dir/out" && fail "bob still reads the retracted text"
if timeout 120 tail --pid="$edits_pid" -f /dev/null; then
  wait "$edits_pid" || fail "bob's listener failed: $(cat "$dir/edits.err")"
  /usr/bin/python3 - "$dir/edits.json" "$typo_seq" <<'PY' && pass "bob saw the edit and the retraction live" || fail "bob's listener: $(cat "$dir/edits.json")"
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
assert [e["verb"] for e in events] == ["edit", "retract"], events
assert all(e["targetSeq"] == int(sys.argv[2]) for e in events), events
assert events[0]["text"] == "Meet at the vault.", events[0]
PY
else
  kill "$edits_pid" 2>/dev/null || true
  fail "bob's listener did not get the edit and the retraction within 120 s"
fi

# -- carol, not a member.
expect_exit 66 "carol cannot read the room at the core" -- as "$carol" read "$room"
expect_exit 77 "carol is refused the room's key by the KMS" -- as "$carol" key show "$key1"
expect_exit 0 "carol lists her rooms" -- as "$carol" --json room list
[ "$(json 'len(d["rooms"])' <"$dir/out")" = 0 ] || fail "carol sees a room"

# -- python3-jwcrypto: the post's JWE from cored's database, the key from the KMS.
/usr/bin/python3 - "$dir/core.db" "$room" >"$dir/jwe" <<'PY'
import sqlite3, sys
con = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(con.execute("SELECT content FROM activities WHERE conversation_id = ? AND verb = 'post' "
                  "ORDER BY seq LIMIT 1", (sys.argv[2],)).fetchone()[0])
PY
expect_exit 0 "alice retrieves the key from the KMS" -- as "$alice" key show "$key1"
cp "$dir/out" "$dir/key.jwk"
/usr/bin/python3 - "$dir/jwe" "$dir/key.jwk" <<'PY' && pass "jwcrypto decrypts the stored JWE with the KMS's key, and only with it" || fail "jwcrypto interop"
import json, sys
from jwcrypto import jwe, jwk
token = open(sys.argv[1]).read().strip()
key = jwk.JWK(**json.load(open(sys.argv[2])))
opened = jwe.JWE()
opened.deserialize(token, key=key)
assert opened.payload.decode() == "The code changes on Monday.", opened.payload
assert json.loads(opened.objects["protected"])["kid"] == key.get("kid")
for wrong in (jwk.JWK.generate(kty="oct", size=256), jwk.JWK.generate(kty="oct", size=256)):
    try:
        jwe.JWE().deserialize(token, key=wrong)
    except Exception:
        continue
    raise SystemExit("a wrong key decrypted the JWE")
PY

# -- compliance: acme's officer reads alice's room from an export and through the core; globex's
# officer and a non-officer cannot.
as "$alice" export "$room" >"$dir/export.json"
expect_exit 0 "acme's officer reads on alice's behalf" -- \
  as "$officer" compliance read --user "$alice" --from "$dir/export.json" "$room"
grep -q "The code changes on Monday." "$dir/out" || fail "the officer does not read the text"
expect_exit 77 "globex's officer is refused" -- \
  as "$outsider" compliance read --user "$alice" --from "$dir/export.json" "$room"
grep -q "Monday" "$dir/out" && fail "globex's officer reads the text"
# The hint is an officer's (issue 16): never "ask a member of the room to add you".
officer_hint() {
  grep -q "ask a member" "$dir/err" && fail "$1: the hint says to ask a member: $(cat "$dir/err")"
  grep -q "$2" "$dir/err" || fail "$1: no officer's hint ($2): $(cat "$dir/err")"
  return 0
}
officer_hint "globex's officer from an export" "complianceOfficers (kmsctl ops policy set)"
expect_exit 77 "the officer gets no key in their own name" -- as "$officer" key show "$key1"
# ... and through the core's compliance reads, without an export.
expect_exit 0 "acme's officer reads alice's room through the core" -- \
  as "$officer" compliance read --user "$alice" "$room"
grep -q "The code changes on Monday." "$dir/out" || fail "the officer does not read via the core"
expect_exit 0 "acme's officer reads all of alice's rooms through the core" -- \
  as "$officer" compliance read --user "$alice"
grep -q "The code changes on Monday." "$dir/out" || fail "the officer does not read all rooms"
expect_exit 66 "the core shows globex's officer none of acme's rooms" -- \
  as "$outsider" compliance read --user "$alice" "$room"
grep -q "Monday" "$dir/out" && fail "globex's officer reads the text through the core"
officer_hint "globex's officer through the core" "name one by its id"
expect_exit 77 "the core refuses compliance reads to a non-officer" -- \
  as "$carol" compliance read --user "$alice" "$room"
grep -q "Monday" "$dir/out" && fail "a non-officer reads the text through the core"
officer_hint "a non-officer through the core" "cored's \[compliance\] section must list you"
grep -q "cored: compliance: officer \"officer@acme.test\" (org \"acme\") read user \"$alice\" conversation \"$room\": ok" \
  "$dir/cored.log" || fail "cored did not log the officer's read"

# -- bob is removed: the room rotates, bob cannot read what follows.
expect_exit 0 "alice removes bob" -- as "$alice" --json room remove "$room" "$bob"
key2="$(json 'd["newKeyUri"]' <"$dir/out")"
[ -n "$key2" ] && [ "$key2" != "$key1" ] || fail "the room did not rotate ($key1 -> $key2)"
expect_exit 0 "alice sends after the removal" -- as "$alice" --json send "$room" "Bob is gone."
[ "$(json 'd["keyUri"]' <"$dir/out")" = "$key2" ] || fail "the post is not under the new key"
expect_exit 66 "bob cannot read the room any more" -- as "$bob" read "$room"
expect_exit 77 "bob is refused the new key" -- as "$bob" key show "$key2"
expect_exit 0 "alice reads both keys' messages" -- as "$alice" read "$room"
grep -q "The code changes on Monday." "$dir/out" && grep -q "Bob is gone." "$dir/out" ||
  fail "alice does not read across the rotation"
as "$alice" export "$room" >"$dir/export2.json"
expect_exit 0 "acme's officer reads across the rotation" -- \
  as "$officer" compliance read --user "$alice" --from "$dir/export2.json" "$room"
grep -q "Bob is gone." "$dir/out" || fail "the officer does not read the post after rotation"
expect_exit 0 "acme's officer reads across the rotation through the core" -- \
  as "$officer" compliance read --user "$alice" "$room"
grep -q "Bob is gone." "$dir/out" && grep -q "Monday" "$dir/out" ||
  fail "the officer does not read across the rotation through the core"

# -- a listener outlives a restart of cored: it reconnects and resumes after the last activity it
# showed, so nothing is missed and nothing is shown twice.
since="$(as "$alice" --json room list | json '[r["lastSeq"] for r in d["rooms"] if r["id"] == "'"$room"'"][0]')"
as "$alice" --json listen "$room" --since "$since" --count 2 >"$dir/relive.json" 2>"$dir/relive.err" &
relisten_pid=$!
expect_exit 0 "alice posts before cored restarts" -- as "$alice" send "$room" "Before the restart."
for _ in $(seq 1 600); do grep -q "Before the restart." "$dir/relive.json" && break; sleep 0.1; done
grep -q "Before the restart." "$dir/relive.json" || fail "the listener missed the first post"
kill -TERM "$CORED_PID" && wait "$CORED_PID" 2>/dev/null
sed -i "s/^listen = 127.0.0.1:0\$/listen = 127.0.0.1:${core_url##*:}/" "$dir/core.ini"
start_cored
wait_attached
expect_exit 0 "alice posts after cored restarts" -- as "$alice" send "$room" "After the restart."
if timeout 120 tail --pid="$relisten_pid" -f /dev/null; then
  wait "$relisten_pid" || fail "the listener failed across the restart: $(cat "$dir/relive.err")"
  [ "$(grep -c "Before the restart." "$dir/relive.json")" = 1 ] &&
    [ "$(grep -c "After the restart." "$dir/relive.json")" = 1 ] ||
    fail "the listener did not show each post once: $(cat "$dir/relive.json")"
  pass "the listener reconnected and resumed across a restart of cored"
else
  kill "$relisten_pid" 2>/dev/null || true
  fail "the listener did not get the post after the restart within 120 s"
fi

# -- usage errors and the other exit statuses (docs/exit-status.md).
expect_exit 64 "an unknown command is a usage error" -- as "$alice" frobnicate
expect_exit 66 "an unknown room is not found" -- as "$alice" read "no such room"
expect_exit 78 "no profile: strongroom login first" -- \
  env STRONGROOM_HOME="$dir/home-nobody" "$CLI" room list
grep -q "strongroom login" "$dir/err" || fail "no hint to log in: $(cat "$dir/err")"
# A token the core refuses (minted for another audience): exit 77, and the hint says what to do.
cp -r "$dir/home-$alice" "$dir/home-stale"
sed -i 's/--audience {audience}/--audience elsewhere/' "$dir/home-stale/profile.ini"
expect_exit 77 "a refused token exits 77" -- \
  env STRONGROOM_HOME="$dir/home-stale" "$CLI" --json room list
grep -q "strongroom login" "$dir/err" || fail "no hint to log in again: $(cat "$dir/err")"
[ "$(json 'd["error"]["code"]' <"$dir/out")" = UNAUTHENTICATED ] ||
  fail "no JSON error for a refused token: $(cat "$dir/out")"
grep -q "eyJ" "$dir/out" "$dir/err" && fail "a token was echoed"
# A core nobody listens on: exit 69.
closed_port="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cp -r "$dir/home-$alice" "$dir/home-away"
sed -i "s#^core_url = .*#core_url = https://127.0.0.1:$closed_port#" "$dir/home-away/profile.ini"
expect_exit 69 "an unreachable core exits 69" -- env STRONGROOM_HOME="$dir/home-away" "$CLI" room list
grep -q "check that they run" "$dir/err" || fail "no hint for an unreachable core: $(cat "$dir/err")"

if [ "$failures" -ne 0 ]; then
  echo "--- cored's log" >&2; tail -n 40 "$dir/cored.log" >&2
  echo "--- kmsd's log" >&2; tail -n 40 "$dir/kmsd.log" >&2
  echo "$failures check(s) failed ($TRANSPORT)" >&2
  exit 1
fi
echo "all checks passed ($TRANSPORT)"
