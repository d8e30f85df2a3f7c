#!/usr/bin/env bash
# Installs, reinstalls, removes and purges the packages of DEBS_DIR with dpkg, inside the mount
# namespace package_test.sh makes (/etc, /var, /usr and /lib overlaid on a tmpfs, so nothing
# reaches the host), and checks what the maintainer scripts do (docs/operations/deployment.md).
# Prints one "FAIL: ..." line per fault. Usage (as root): install_check.sh DEBS_DIR EMPTY_DIR
# (EMPTY_DIR holds the overlays' tmpfs while the namespace lives).
set -uo pipefail
debs="$1"
upper="$2"
fail() { echo "FAIL: $*"; }

mount -t tmpfs tmpfs "$upper" || exit 77
for d in etc var usr lib; do
  [ -L "/$d" ] && continue
  mkdir -p "$upper/$d.up" "$upper/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$upper/$d.up,workdir=$upper/$d.work" "/$d" ||
    exit 77
done

dpkg -i "$debs"/*.deb >"$upper/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$upper/dpkg.log")"
# daemon user state config expected-exit
while read -r daemon user state config expected; do
  entry="$(getent passwd "$user")" || { fail "no user $user"; continue; }
  IFS=: read -r _ _ _ gid _ home shell <<<"$entry"
  [ "$(getent group "$gid" | cut -d: -f1)" = "$user" ] || fail "$user's group is not $user"
  [ "$home" = "/var/lib/strongroom/$state" ] || fail "$user's home is $home"
  [ "$shell" = /usr/sbin/nologin ] || fail "$user's shell is $shell"
  [ "$(stat -c '%U:%G %a' "/var/lib/strongroom/$state")" = "$user:$user 750" ] ||
    fail "/var/lib/strongroom/$state is $(stat -c '%U:%G %a' "/var/lib/strongroom/$state")"
  [ "$(stat -c '%U:%G %a' "/etc/strongroom/$config")" = "root:$user 640" ] ||
    fail "/etc/strongroom/$config is $(stat -c '%U:%G %a' "/etc/strongroom/$config")"
  [ -e "/etc/systemd/system/multi-user.target.wants/$daemon.service" ] &&
    fail "$daemon.service was enabled on installation"
  # The example configuration is well-formed: the daemon, as its user, refuses to start on what
  # it names that does not exist (66), or kmsd on the token it cannot find (69), not on a setting.
  out="$(runuser -u "$user" -- "/usr/sbin/$daemon" --config "/etc/strongroom/$config" 2>&1)"
  status=$?
  [ "$status" = "$expected" ] || fail "$daemon on the example config exited $status: $out"
done <<'LIST'
kmsd strongroom-kms kms kms.ini 69
cored strongroom-core core core.ini 66
indexerd strongroom-indexer indexer indexer.ini 66
LIST
if getent group softhsm >/dev/null; then
  id -nG strongroom-kms | grep -qw softhsm || fail "strongroom-kms is not in the softhsm group"
fi
runuser -u strongroom-core -- cat /etc/strongroom/kms.ini >/dev/null 2>&1 &&
  fail "strongroom-core can read kms.ini"

# Reinstalling (postinst configure with the old version) keeps a changed conffile and its group.
echo "; changed by the operator" >>/etc/strongroom/kms.ini
dpkg -i "$debs"/strongroom-kmsd_*.deb >"$upper/dpkg.log" 2>&1 || fail "reinstall: $(cat "$upper/dpkg.log")"
grep -q "changed by the operator" /etc/strongroom/kms.ini || fail "reinstall replaced kms.ini"
[ "$(stat -c '%G %a' /etc/strongroom/kms.ini)" = "strongroom-kms 640" ] ||
  fail "reinstall left kms.ini $(stat -c '%G %a' /etc/strongroom/kms.ini)"

# remove keeps the state and the configuration; purge deletes both and keeps the user.
touch /var/lib/strongroom/kms/kms.db
dpkg -r strongroom-kmsd >"$upper/dpkg.log" 2>&1 || fail "dpkg -r: $(cat "$upper/dpkg.log")"
[ -e /usr/sbin/kmsd ] && fail "dpkg -r left /usr/sbin/kmsd"
[ -e /var/lib/strongroom/kms/kms.db ] || fail "dpkg -r deleted the state"
[ -e /etc/strongroom/kms.ini ] || fail "dpkg -r deleted kms.ini"
dpkg -P strongroom-kmsd >"$upper/dpkg.log" 2>&1 || fail "dpkg -P: $(cat "$upper/dpkg.log")"
[ -e /var/lib/strongroom/kms ] && fail "dpkg -P kept /var/lib/strongroom/kms"
[ -e /etc/strongroom/kms.ini ] && fail "dpkg -P kept kms.ini"
[ -d /var/lib/strongroom/core ] || fail "purging strongroom-kmsd deleted cored's state"
getent passwd strongroom-kms >/dev/null || fail "dpkg -P deleted the user strongroom-kms"
exit 0
