#!/usr/bin/env bash
# scripts/check-pkcs11-calls, on a small tree of its own: it names a raw PKCS#11 call in a library
# (through a function list, or a C_GetFunctionList pointer) and fails, passes the call layer itself
# and tests/ and bench/, and passes once the raw calls are gone.
#   pkcs11_calls_check_test.sh CHECK_SCRIPT
set -euo pipefail
check="$1"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/hsm/src" "$tree/kms" "$tree/tests/hsm" "$tree/bench"
cat >"$tree/hsm/src/cryptoki.cc" <<'CC'
CkResult Cryptoki::Encrypt() { return Call("C_Encrypt", fn_->C_Encrypt, session); }
CC
cat >"$tree/tests/hsm/raw_test.cc" <<'CC'
EXPECT_EQ(fn->C_OpenSession(slot, flags, nullptr, nullptr, &s), CKR_OK);
CC
cat >"$tree/bench/raw_bench.cc" <<'CC'
CK_RV rv = fn->C_Encrypt(session, in, in_len, out, &out_len);
CC
cat >"$tree/hsm/src/token.cc" <<'CC'
// C_Finalize and C_Initialize again: a comment that names calls is no call.
CK_C_INITIALIZE_ARGS args{};
return opened.error("C_OpenSession (session copies)");
CC
cat >"$tree/hsm/src/wrap.cc" <<'CC'
  CK_RV rv = lease.fn()->C_Encrypt(lease.handle(), in, in_len, out, &out_len);
CC
cat >"$tree/kms/load.cc" <<'CC'
auto get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
CC

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

set +e
out="$("$check" "$tree" 2>&1)"
status=$?
set -e
echo "$out"
[ "$status" -eq 1 ] || fail "exit status $status with raw calls, expected 1"
grep -q '^hsm/src/wrap.cc:1:' <<<"$out" || fail "the call through a function list is not named"
grep -q '^kms/load.cc:1:' <<<"$out" || fail "the C_GetFunctionList pointer is not named"
for clean in hsm/src/cryptoki.cc tests/ bench/ hsm/src/token.cc; do
  if grep -q "^$clean" <<<"$out"; then fail "$clean is named but may call PKCS#11 or names no call"; fi
done

rm "$tree/hsm/src/wrap.cc" "$tree/kms/load.cc"
"$check" "$tree" || fail "exit status $? once the raw calls are gone, expected 0"
echo "PASS"
