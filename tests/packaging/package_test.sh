#!/usr/bin/env bash
# Builds the Debian packages with scripts/package into a temporary directory and inspects them
# (docs/operations/deployment.md): each package's files with their modes and owners
# (dpkg-deb -c), its control fields (the dependencies dpkg-shlibdeps found), its conffiles and
# maintainer scripts (present, 0755, `sh -n` clean), its systemd unit (systemd-analyze verify in
# the unpacked tree, and the keys the deployment guide promises), and lintian: no error, warning
# or info that the package's lintian-overrides does not explain. As root, it also installs,
# reinstalls, removes and purges them in a throwaway mount namespace (install_check.sh).
# Usage: package_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src="$(cd "${1:?usage: package_test.sh SOURCE_DIR BUILD_DIR}" && pwd)"
export STRONGROOM_BUILD_DIR="${2:?usage: package_test.sh SOURCE_DIR BUILD_DIR}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# STRONGROOM_PACKAGE_TEST_DEBS: inspect the packages of that directory instead (to check that a
# package altered by hand fails).
if [ -n "${STRONGROOM_PACKAGE_TEST_DEBS:-}" ]; then
  cp -r "$STRONGROOM_PACKAGE_TEST_DEBS" "$work/debs"
  ls "$work"/debs/*.deb >"$work/package.out"
else
  "$src/scripts/package" "$work/debs" >"$work/package.out"
fi
version="$(sed -n 's/^project(strongroom VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")"
arch="$(dpkg --print-architecture)"
for p in cli cored indexerd kmsd; do
  grep -qx "$work/debs/strongroom-${p}_${version}_${arch}.deb" "$work/package.out" ||
    fail "scripts/package did not print strongroom-$p: $(cat "$work/package.out")"
done
[ "$(wc -l <"$work/package.out")" -eq 4 ] || fail "scripts/package made other than 4 packages"

# expect_files PACKAGE "MODE PATH"...: the regular files of PACKAGE are these, with these modes,
# every one owned root/root (besides /usr/share/doc/PACKAGE/*.md), and every directory is
# drwxr-xr-x root/root.
expect_files() {
  local pkg="$1" deb="$work/debs/${1}_${version}_${arch}.deb" want line
  shift
  dpkg-deb -c "$deb" >"$work/$pkg.list"
  for want in "$@" "-rw-r--r-- ./usr/share/doc/$pkg/copyright" \
    "-rw-r--r-- ./usr/share/doc/$pkg/changelog.gz" \
    "-rw-r--r-- ./usr/share/lintian/overrides/$pkg"; do
    awk -v mode="${want%% *}" -v path="${want#* }" \
      '$1 == mode && $2 == "root/root" && $6 == path { found = 1 } END { exit !found }' \
      "$work/$pkg.list" || fail "$pkg: no ${want#* } with mode ${want%% *} owned root/root"
  done
  while read -r line; do
    local mode owner path
    mode="$(awk '{print $1}' <<<"$line")"
    owner="$(awk '{print $2}' <<<"$line")"
    path="$(awk '{print $6}' <<<"$line")"
    [ "$owner" = root/root ] || fail "$pkg: $path is owned by $owner"
    case "$mode" in
      d*) [ "$mode" = drwxr-xr-x ] || fail "$pkg: directory $path has mode $mode" ;;
      *)
        case " $* " in
          *" $mode $path "*) ;;
          *) [[ "$path" == ./usr/share/doc/$pkg/*.md && "$mode" == -rw-r--r-- ]] ||
               [[ "$path" == ./usr/share/doc/$pkg/copyright ||
                  "$path" == ./usr/share/doc/$pkg/changelog.gz ||
                  "$path" == ./usr/share/lintian/overrides/$pkg ]] ||
               fail "$pkg: unexpected $mode $path" ;;
        esac
        ;;
    esac
  done <"$work/$pkg.list"
}

expect_files strongroom-kmsd "-rwxr-xr-x ./usr/sbin/kmsd" "-rwxr-xr-x ./usr/bin/kmsctl" \
  "-rw-r----- ./etc/strongroom/kms.ini" "-rw-r--r-- ./lib/systemd/system/kmsd.service" \
  "-rw-r--r-- ./usr/share/doc/strongroom-kmsd/deployment.md"
expect_files strongroom-cored "-rwxr-xr-x ./usr/sbin/cored" \
  "-rw-r----- ./etc/strongroom/core.ini" "-rw-r--r-- ./lib/systemd/system/cored.service" \
  "-rw-r--r-- ./usr/share/doc/strongroom-cored/deployment.md"
expect_files strongroom-indexerd "-rwxr-xr-x ./usr/sbin/indexerd" \
  "-rw-r----- ./etc/strongroom/indexer.ini" "-rw-r--r-- ./lib/systemd/system/indexerd.service" \
  "-rw-r--r-- ./usr/share/doc/strongroom-indexerd/deployment.md"
expect_files strongroom-cli "-rwxr-xr-x ./usr/bin/strongroom"

# expect_control PACKAGE FIELD WORD...: FIELD of PACKAGE's control file names each package WORD.
expect_control() {
  local pkg="$1" field="$2" value dep
  shift 2
  value="$(dpkg-deb -f "$work/debs/${pkg}_${version}_${arch}.deb" "$field")"
  for dep in "$@"; do
    grep -Eq "(^|, )$dep( |,|$)" <<<"$value" || fail "$pkg: $field lacks $dep: $value"
  done
}
# expect_no_control PACKAGE FIELD WORD...: FIELD of PACKAGE's control file names no WORD.
expect_no_control() {
  local pkg="$1" field="$2" value dep
  shift 2
  value="$(dpkg-deb -f "$work/debs/${pkg}_${version}_${arch}.deb" "$field")"
  for dep in "$@"; do
    ! grep -Eq "(^|, )$dep( |,|$)" <<<"$value" || fail "$pkg: $field names $dep: $value"
  done
}
poco="libpocofoundation80 libpoconet80 libpoconetssl80 libpocoutil80"
# shellcheck disable=SC2086 # word splitting of the lists is meant
{
  expect_control strongroom-kmsd Depends adduser libp11-kit0 libcjose0 libssl3 $poco
  expect_control strongroom-kmsd Recommends softhsm2
  expect_control strongroom-cored Depends adduser libcjose0 libssl3 $poco
  # libpq is linked in, statically and without LDAP (docs/architecture.md): GSSAPI is what it needs.
  expect_control strongroom-cored Depends libgssapi-krb5-2
  expect_no_control strongroom-cored Depends libpq5 libldap-2.5-0 libgnutls30 libp11-kit0
  expect_no_control strongroom-kmsd Depends libpq5 libldap-2.5-0
  expect_control strongroom-indexerd Depends adduser libicu72 libstemmer0d libssl3 $poco
  expect_control strongroom-cli Depends libcjose0 libssl3 libpocofoundation80
}

# check_daemon PACKAGE UNIT USER STATE CONFIG: the daemon package's maintainer scripts, conffile
# and systemd unit.
check_daemon() {
  local pkg="$1" unit="$2" user="$3" state="$4" config="$5" script
  local deb="$work/debs/${pkg}_${version}_${arch}.deb" ctl="$work/$pkg.control"
  local root="$work/$pkg.root"
  dpkg-deb -e "$deb" "$ctl"
  dpkg-deb -x "$deb" "$root"
  [ "$(cat "$ctl/conffiles")" = "/etc/strongroom/$config" ] ||
    fail "$pkg: conffiles is not /etc/strongroom/$config: $(cat "$ctl/conffiles")"
  for script in postinst prerm postrm; do
    if [ ! -f "$ctl/$script" ]; then
      fail "$pkg: no $script"
      continue
    fi
    [ "$(stat -c %a "$ctl/$script")" = 755 ] || fail "$pkg: $script is not mode 0755"
    sh -n "$ctl/$script" || fail "$pkg: $script does not parse"
    grep -q "@" "$ctl/$script" && fail "$pkg: $script has an unsubstituted @VARIABLE@"
  done
  grep -q "^user=$user\$" "$ctl/postinst" || fail "$pkg: postinst does not make $user"
  grep -q "adduser --system --group" "$ctl/postinst" || fail "$pkg: postinst adds no system user"
  grep -q "^state=/var/lib/strongroom/$state\$" "$ctl/postinst" ||
    fail "$pkg: postinst does not make /var/lib/strongroom/$state"
  grep -Eq "deb-systemd-invoke (start|restart)|systemctl .*(enable|start)" "$ctl/postinst" &&
    fail "$pkg: postinst enables or starts $unit"
  grep -q "rm -rf /var/lib/strongroom/$state\$" "$ctl/postrm" ||
    fail "$pkg: postrm does not delete /var/lib/strongroom/$state on purge"

  # The unit: systemd-analyze verify in the unpacked tree, with the system's units beside it for
  # the targets it names (it prints what it ignores and exits 0, so any output fails).
  local u="$root/lib/systemd/system/$unit" out
  cp -rn /lib/systemd/system/. "$root/lib/systemd/system/" 2>/dev/null || true
  if command -v systemd-analyze >/dev/null; then
    out="$(systemd-analyze verify --root="$root" --man=no "/lib/systemd/system/$unit" 2>&1)" ||
      fail "$pkg: systemd-analyze verify $unit failed: $out"
    [ -z "$out" ] || fail "$pkg: systemd-analyze verify $unit: $out"
  fi
  local key
  for key in "User=$user" "Group=$user" "Restart=on-failure" \
    "RestartPreventExitStatus=64 65 66 77 78" "NoNewPrivileges=yes" "ProtectSystem=strict" \
    "ProtectHome=yes" "PrivateTmp=yes" "CapabilityBoundingSet=" "UMask=0027" \
    "StateDirectory=strongroom/$state" "WantedBy=multi-user.target"; do
    grep -qx "$key" "$u" || fail "$pkg: $unit lacks $key"
  done
  grep -Eq "^ReadWritePaths=/var/lib/strongroom/$state( |\$)" "$u" ||
    fail "$pkg: $unit does not make /var/lib/strongroom/$state writable first"
  local exec
  exec="$(sed -n 's/^ExecStart=//p' "$u")"
  [ -x "$root${exec%% *}" ] || fail "$pkg: $unit starts ${exec%% *}, which $pkg lacks"
  [ "${exec#* }" = "--config /etc/strongroom/$config" ] ||
    fail "$pkg: $unit does not start with --config /etc/strongroom/$config: $exec"
}

check_daemon strongroom-kmsd kmsd.service strongroom-kms kms kms.ini
check_daemon strongroom-cored cored.service strongroom-core core core.ini
check_daemon strongroom-indexerd indexerd.service strongroom-indexer indexer indexer.ini
grep -q "^ReadWritePaths=.* -/var/lib/softhsm/tokens" "$work/strongroom-kmsd.root/lib/systemd/system/kmsd.service" ||
  fail "strongroom-kmsd: kmsd.service does not let kmsd write SoftHSM2's token directory"

# lintian: every tag of severity info or above is overridden, with the reason in the
# package's lintian-overrides.
if command -v lintian >/dev/null; then
  if ! out="$(lintian --fail-on error,warning,info --display-info "$work"/debs/*.deb 2>&1)"; then
    fail "lintian: $out"
  fi
  grep -E "^[EWI]: " <<<"$out" && fail "lintian reports tags that are not overridden"
else
  fail "lintian is not installed (scripts/setup-debian installs it)"
fi

# Installing, reinstalling, removing and purging for real, in a mount namespace of overlays
# (install_check.sh): root only. A developer's unprivileged run leaves it out and says so; in CI
# (CI set, as CI systems do) it is required, and not being able to run it is a failure.
skip_install_check() {
  if [ -n "${CI:-}" ]; then
    fail "install check: $1, and CI requires it"
  else
    echo "install check skipped: $1"
  fi
}
if [ "$(id -u)" -ne 0 ]; then
  skip_install_check "it needs root"
elif ! unshare --mount true 2>/dev/null; then
  skip_install_check "no mount namespaces here"
else
  status=0
  mkdir "$work/overlays"
  out="$(unshare --mount --propagation private "$src/tests/packaging/install_check.sh" \
    "$work/debs" "$work/overlays" 2>&1)" || status=$?
  if [ "$status" -eq 77 ]; then
    skip_install_check "no overlay mounts here"
  elif [ "$status" -ne 0 ] || grep -q "^FAIL: " <<<"$out"; then
    fail "install check (exit $status): $out"
  fi
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "packages checked: $(xargs -n1 basename <"$work/package.out" | tr '\n' ' ')"
