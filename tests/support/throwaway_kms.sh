# A throwaway KMS for scripts (sourced, not run): a SoftHSM2 token in a directory of its own, root
# keys, the identity key and its chain from a test CA, a TLS certificate for 127.0.0.1 from the
# same CA, a development IdP and a user token per organization, and kmsd on 127.0.0.1 (port 0).
# Used by bench/run-kms-load.sh, bench/run-core-load.sh, bench/run-sdk-latency.sh,
# bench/run-indexer-load.sh, tests/kms/jwcrypto_client_test.sh and
# tests/cli/strongroom_cli_test.sh.
#
#   KMSCTL=... IDP=... KMSD=...           the built tools
#   throwaway_kms_setup DIR ORGS [KMS_INI_LINES]   ORGS: "acme" or "acme globex"; extra [kms] lines
#   throwaway_kms_start LOG               starts kmsd; sets KMSD_PID and KMS_URL
#   throwaway_kms_stop                    SIGTERM, then waits; returns kmsd's exit status
#   throwaway_ca DIR NAME                 a test CA: DIR/ca.pem, DIR/ca.key (keys mode 0600)
#   throwaway_tls_cert DIR                a TLS certificate for 127.0.0.1 from DIR's CA: DIR/tls.pem,
#                                         DIR/tls.key (also for scripts that start cored alone)
#
# Afterwards: $DIR/ca.pem (trust anchor of the TLS certificate and the identity chain),
# $DIR/token-<org>.jwt (a bearer token of user load-user@<org>.test, mode 0600), $DIR/kms.ini.
# PINs are random, in files of mode 0600, never on a command line. Needs SOFTHSM2_CONF unset or
# ignorable: it is pointed at $DIR/softhsm2.conf.

throwaway_kms_setup() {
  local dir="$1" orgs="$2" extra="${3:-}"
  local module=/usr/lib/softhsm/libsofthsm2.so org issuers=""
  TK_DIR="$dir"
  (
    umask 077
    mkdir -p "$dir/tokens" "$dir/secrets"
    openssl rand -hex 16 >"$dir/secrets/user.pin"
    openssl rand -hex 16 >"$dir/secrets/so.pin"
  )
  cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
  export SOFTHSM2_CONF="$dir/softhsm2.conf"
  "$KMSCTL" hsm init-token --module "$module" --label throwaway \
    --so-pin-source "file:$dir/secrets/so.pin" --pin-source "file:$dir/secrets/user.pin" \
    >/dev/null || return 1
  cat >"$dir/hsm.ini" <<INI
[hsm]
tokens = primary
node_id = throwaway

[hsm.primary]
uri = pkcs11:token=throwaway?module-path=$module&pin-source=file:$dir/secrets/user.pin
${TK_HSM_LINES:-}
INI
  for org in $orgs; do
    "$KMSCTL" --config "$dir/hsm.ini" hsm init-root --org "$org" >/dev/null || return 1
  done
  "$KMSCTL" --config "$dir/hsm.ini" hsm init-identity >/dev/null || return 1

  throwaway_ca "$dir" "Strongroom throwaway CA" || return 1
  "$KMSCTL" --config "$dir/hsm.ini" hsm certify-identity --ca-cert "$dir/ca.pem" \
    --ca-key "$dir/ca.key" --host kms.throwaway.test --days 2 --out "$dir/identity.pem" \
    >/dev/null || return 1
  throwaway_tls_cert "$dir" || return 1

  for org in $orgs; do
    "$IDP" init --dir "$dir/idp-$org" --issuer "https://idp.$org.test" >/dev/null || return 1
    "$IDP" token --dir "$dir/idp-$org" --subject "load-user@$org.test" --audience kms \
      --ttl 86400 --out "$dir/token-$org.jwt" || return 1
    issuers="${issuers:+$issuers, }$org"
  done

  {
    cat "$dir/hsm.ini"
    printf '%s\n' "[kms]" "host = kms.throwaway.test" "database = $dir/kms.db" \
      "listen = 127.0.0.1:0" "tls_cert = $dir/tls.pem" "tls_key = $dir/tls.key" \
      "identity_chain = $dir/identity.pem"
    [ -n "$extra" ] && printf '%s\n' "$extra"
    printf '\n%s\n' "[jwt]"
    echo "issuers = $issuers"
    for org in $orgs; do
      printf '\n%s\n' "[jwt.$org]"
      printf '%s\n' "issuer = https://idp.$org.test" "org = $org" "subject_domains = $org.test" \
        "jwks = $dir/idp-$org/jwks.json"
    done
  } >"$dir/kms.ini"
}

throwaway_kms_start() {
  local log="$1" i
  rm -f "$TK_DIR/port"
  "$KMSD" --config "$TK_DIR/kms.ini" --port-file "$TK_DIR/port" 2>"$log" &
  KMSD_PID=$!
  for i in $(seq 1 600); do
    [ -s "$TK_DIR/port" ] && break
    if ! kill -0 "$KMSD_PID" 2>/dev/null; then
      echo "kmsd exited during start-up:" >&2
      cat "$log" >&2
      KMSD_PID=""
      return 1
    fi
    sleep 0.1
  done
  [ -s "$TK_DIR/port" ] || { echo "kmsd did not start within 60 s" >&2; return 1; }
  KMS_URL="https://127.0.0.1:$(cat "$TK_DIR/port")"
}

throwaway_kms_stop() {
  local status=0
  if [ -n "${KMSD_PID:-}" ] && kill -0 "$KMSD_PID" 2>/dev/null; then
    kill -TERM "$KMSD_PID"
    wait "$KMSD_PID" || status=$?
  fi
  KMSD_PID=""
  return "$status"
}

throwaway_ca() {
  local dir="$1" name="$2"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=$name" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  )
}

throwaway_tls_cert() {
  local dir="$1"
  (
    umask 077
    printf '%s\n' "subjectAltName = IP:127.0.0.1, DNS:localhost" \
      "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
      "extendedKeyUsage = serverAuth" >"$dir/server.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null &&
      openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/tls.pem" 2>/dev/null
  )
}
