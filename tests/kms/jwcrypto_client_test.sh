#!/usr/bin/env bash
# CTest wrapper of jwcrypto_client_test.py: a throwaway KMS (tests/support/throwaway_kms.sh: a real
# SoftHSM2 token, a test CA, two organizations' IdPs) with kmsd on 127.0.0.1 port 0, and the
# python3-jwcrypto client run against it. Fails (never skips) when anything is missing.
#
#   jwcrypto_client_test.sh KMSD KMSCTL IDP
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 KMSD KMSCTL IDP" >&2; exit 64; }
KMSD="$1" KMSCTL="$2" IDP="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../support/throwaway_kms.sh
. "$here/../support/throwaway_kms.sh"

dir="$(mktemp -d /tmp/sr-jwcrypto-client.XXXXXX)"
trap 'throwaway_kms_stop || true; rm -rf "$dir"' EXIT
throwaway_kms_setup "$dir" "acme globex"
throwaway_kms_start "$dir/kmsd.log"

status=0
/usr/bin/python3 "$here/jwcrypto_client_test.py" --url "$KMS_URL" --ca "$dir/ca.pem" \
  --token-file "$dir/token-acme.jwt" --other-token-file "$dir/token-globex.jwt" || status=$?
if ! throwaway_kms_stop; then
  echo "FAIL: kmsd did not stop cleanly" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- kmsd's log" >&2
  cat "$dir/kmsd.log" >&2
fi
exit "$status"
