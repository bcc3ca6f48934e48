#!/usr/bin/env bash
# Packaging tests (issue 6): builds lapps-ssse3 and lapps-avx2 with debian/build-debs.sh, then
#  1. the layout (dpkg-deb --contents / --info), the installed configuration, the variants;
#  2. the start-up CPU check in the avx2 binary: runs first (.init_array) and uses no vector
#     register (disassembly);
#  3. lintian: no errors (output printed);
#  4. systemd-analyze verify prints nothing; systemd-analyze security --offline=yes <= 2.5;
#  5. as root only: dpkg -i avx2, run it as the lapps user with a test NOTIFY_SOCKET and
#     WebSocket echoes (tests/packaging_smoke.py), a conffile edit, dpkg -i ssse3 over it
#     (the edit stays; purging the replaced avx2 leaves ssse3's files alone), the edit survives
#     a reinstall, dpkg -P removes everything.
# Installs lintian (and systemd) with apt-get when missing. Cleans up after itself; safe to run
# again. Closing line: "packaging: N passed, N failed".
# shellcheck disable=SC2317 # functions are called through check "..." CMD, which it cannot see
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never LC_ALL=C.UTF-8

readonly DEBS=target/debian
readonly MAX_EXPOSURE=2.5
readonly PORT=5083
passed=0
failed=0
tmp=$(mktemp -d)
made_run_systemd= # set while a stand-in /run/systemd/system made by this script exists
trap 'rm -rf "$tmp"; [ -z "$made_run_systemd" ] || rmdir /run/systemd/system' EXIT

pass() { echo "ok: $*"; passed=$((passed + 1)); }
indent() { sed 's/^/    /'; }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

apt_install() { # apt_install PACKAGE... (update once, only when the plain install fails)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    }
}

finish() {
    echo "packaging: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

echo "== build both packages (debian/build-debs.sh)"
bash debian/build-debs.sh
version=$(sed -n '1s/^lapps (\([^)]*\)).*/\1/p' debian/changelog)
deb() { echo "$DEBS/lapps-$1_${version}_amd64.deb"; }

echo "== layout"
for v in ssse3 avx2; do
    other=ssse3
    [ "$v" = ssse3 ] && other=avx2
    contents=$(dpkg-deb --contents "$(deb "$v")" | awk '{print $6}')
    missing=""
    for path in ./usr/bin/lapps ./etc/lapps/ws.json ./etc/lapps/lapps.json ./etc/lapps/apps/ \
        ./usr/share/lapps/apps/ ./usr/share/lapps/lib/ ./lib/systemd/system/lapps.service \
        "./usr/share/doc/lapps-$v/changelog.Debian.gz" "./usr/share/doc/lapps-$v/NEWS.Debian.gz" \
        "./usr/share/doc/lapps-$v/copyright" "./usr/share/doc/lapps-$v/README.md.gz" \
        "./usr/share/doc/lapps-$v/docs/lua-api.md.gz" "./usr/share/doc/lapps-$v/docs/nljson.md.gz" \
        "./usr/share/doc/lapps-$v/docs/threading.md.gz" ./usr/share/lapps/clients/js/lapps.mjs \
        ./usr/share/lapps/clients/js/example.html ./usr/share/lapps/clients/js/example.mjs \
        "./usr/share/doc/lapps-$v/clients/js/README.md.gz" \
        ./usr/share/man/man1/lapps.1.gz; do
        grep -qxF "$path" <<<"$contents" || missing="$missing $path"
    done
    # Every app and shared module of the tree at build time is packaged.
    for f in $(cd lua 2>/dev/null && find apps lib -type f 2>/dev/null); do
        grep -qxF "./usr/share/lapps/$f" <<<"$contents" || missing="$missing ./usr/share/lapps/$f"
    done
    check "lapps-$v contains the installed layout${missing:+ (missing:$missing)}" \
        test -z "$missing"
    dpkg-deb --contents "$(deb "$v")" | grep -E ' \./(usr/bin|etc|lib/systemd)/' | indent

    info=$(dpkg-deb --field "$(deb "$v")" Package Provides Conflicts Replaces Architecture)
    check "lapps-$v: Provides lapps, Conflicts/Replaces lapps-$other, amd64" \
        grep -qzE "Package: lapps-$v
Provides: lapps
Conflicts: lapps-$other
Replaces: lapps-$other
Architecture: amd64" <<<"$info"
    conffiles=$(dpkg-deb --info "$(deb "$v")" conffiles)
    check "lapps-$v: /etc/lapps/ws.json and lapps.json are conffiles" \
        test "$conffiles" = "$(printf '/etc/lapps/lapps.json\n/etc/lapps/ws.json')"

    rm -rf "$tmp/x" && mkdir -p "$tmp/x" && dpkg-deb --extract "$(deb "$v")" "$tmp/x"
    check "lapps-$v: lapps --version names the $v build" \
        grep -q "simd build: $v," <<<"$("$tmp/x/usr/bin/lapps" --version)"
    check "lapps-$v: installed lapps.json points at /usr/share/lapps and /var/lib/lapps" \
        python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))["directories"]
want = {"applications": "/usr/share/lapps/apps", "lib": "/usr/share/lapps/lib",
        "app_conf_dir": "/etc/lapps/apps", "workdir": "/var/lib/lapps",
        "tmp": "/var/lib/lapps/tmp"}
sys.exit(0 if all(d.get(k) == v for k, v in want.items()) else 1)' "$tmp/x/etc/lapps/lapps.json"
    check "lapps-$v: installed ws.json listens on 127.0.0.1:$PORT" \
        python3 -c '
import json, sys
w = json.load(open(sys.argv[1]))
sys.exit(0 if (w["ip"], w["port"]) == ("127.0.0.1", int(sys.argv[2])) else 1)' \
        "$tmp/x/etc/lapps/ws.json" "$PORT"
    check "lapps-$v: the log-only mqr demos are installed but not started" \
        python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["services"]
sys.exit(0 if all(s[d].get("auto_start") is False for d in ("mqr_sender", "mqr_receiver"))
         and s["echo_lapps"].get("auto_start", True) else 1)' "$tmp/x/etc/lapps/lapps.json"
    check "lapps-$v: installed ws.json leaves the IO worker count and max_connections to the host" \
        python3 -c '
import json, sys
w = json.load(open(sys.argv[1])).get("workers", {})
sys.exit(0 if "workers" not in w and "max_connections" not in w else 1)' \
        "$tmp/x/etc/lapps/ws.json"
done

echo "== CPU check in the avx2 binary (unstripped build output)"
bin=target/deb-avx2/x86_64-unknown-linux-gnu/release/lapps
disasm() { objdump -d --no-show-raw-insn --disassemble="$1" "$bin"; }
scalar_only() { # scalar_only SYMBOL: the function exists and touches no vector register
    local code
    code=$(disasm "$1")
    grep -q "^[0-9a-f]* <$1>:" <<<"$code" && ! grep -qE '%[xyz]mm' <<<"$code"
}
for fn in lapps_cpu_exit_unless_supported lapps_cpu_check_build_variant; do
    check "$fn exists and uses no vector register" scalar_only "$fn"
done
check "lapps_cpu_check_build_variant asks CPUID itself (not folded at compile time)" \
    grep -q cpuid <<<"$(disasm lapps_cpu_check_build_variant)"
check "the refusal message is in the binary" \
    grep -q "this build needs a CPU with AVX2 (variant avx2); install the lapps-ssse3 package" \
    <<<"$(strings "$bin")"
init_start=$(readelf -SW "$bin" | sed -n 's/.* \.init_array *INIT_ARRAY *\([0-9a-f]*\) .*/\1/p')
first_ctor=$(readelf -rW "$bin" | awk -v a="$init_start" '$1 == a {print $4}')
check_addr=$(nm "$bin" | awk '$3 == "lapps_cpu_exit_unless_supported" {print $1}')
check "the CPU check is the first .init_array constructor (before std's start-up)" \
    test -n "$first_ctor" -a "$((16#$first_ctor))" = "$((16#${check_addr:-0}))"

echo "== preinst: a CPU without the build's features is refused before anything is installed"
printf 'processor\t: 0\nflags\t\t: fpu sse2\n' >"$tmp/cpu-sse2"
printf 'processor\t: 0\nflags\t\t: fpu sse2 ssse3\n' >"$tmp/cpu-ssse3"
printf 'processor\t: 0\nflags\t\t: fpu sse2 ssse3 avx avx2\n' >"$tmp/cpu-avx2"
for v in ssse3 avx2; do
    dpkg-deb -e "$(deb "$v")" "$tmp/control-$v"
done
preinst() { # preinst VARIANT CPUINFO [ENV...]: the package's preinst "install", its stderr
    local v=$1 cpu=$2
    shift 2
    env LAPPS_CPUINFO="$tmp/cpu-$cpu" "$@" sh "$tmp/control-$v/preinst" install 2>&1
}
refused() { # refused VARIANT CPUINFO TEXT: fails and says TEXT
    local out
    if out=$(preinst "$1" "$2"); then return 1; fi
    grep -qF "$3" <<<"$out"
}
check "lapps-avx2 is refused on a CPU without avx2, naming lapps-ssse3"     refused avx2 ssse3 "lapps-avx2: this CPU has no avx2, which this build needs; install lapps-ssse3 instead"
check "lapps-avx2 installs on a CPU with avx2" preinst avx2 avx2
check "LAPPS_SKIP_CPU_CHECK=1 installs lapps-avx2 anyway" preinst avx2 ssse3 LAPPS_SKIP_CPU_CHECK=1
check "lapps-ssse3 is refused on a CPU without ssse3"     refused ssse3 sse2 "lapps-ssse3: this CPU has no ssse3"
check "lapps-ssse3 installs on a CPU with ssse3" preinst ssse3 ssse3

echo "== lintian"
command -v lintian >/dev/null || apt_install lintian
for v in ssse3 avx2; do
    # lintian exits 1 when it reports errors (checked below from its output), 2 and up when it
    # failed to run at all: that must not pass as "no errors".
    lintian_rc=0
    out=$(lintian --display-info "$(deb "$v")" 2>&1) || lintian_rc=$?
    out=$(grep -v 'running with root privileges' <<<"$out" || true)
    # 1 with no E: line is lintian failing in its own way, not a verdict on the package.
    lintian_ran() { [ "$lintian_rc" -eq 0 ] || { [ "$lintian_rc" -eq 1 ] && grep -q '^E: ' <<<"$out"; }; }
    check "lintian ran on lapps-$v (exit status $lintian_rc)" lintian_ran
    echo "lintian $(deb "$v"):"
    echo "${out:-(no output)}" | indent
    no_errors() { ! grep -q '^E: ' <<<"$out"; }
    check "lintian: no errors in lapps-$v" no_errors
done

echo "== systemd-analyze"
command -v systemd-analyze >/dev/null || apt_install systemd
# verify checks ExecStart= binaries, the targets the unit names and its man: documentation: give
# it a root holding the extracted package plus the host's units and /bin/kill, and the
# package's man pages.
root="$tmp/root"
mkdir -p "$root/bin" "$root/lib/systemd"
dpkg-deb --extract "$(deb avx2)" "$root"
cp -a /lib/systemd/system/. "$root/lib/systemd/system/"
cp /bin/kill "$root/bin/kill"
verify=$(MANPATH="$root/usr/share/man" systemd-analyze verify --root="$root" lapps.service 2>&1 ||
    echo "(exit status $?)")
echo "systemd-analyze verify lapps.service:"
echo "${verify:-(no output)}" | indent
check "systemd-analyze verify prints nothing" test -z "$verify"
security=$(systemd-analyze security --offline=yes systemd/lapps.service 2>&1 || true)
echo "systemd-analyze security --offline=yes systemd/lapps.service:"
indent <<<"$security"
score=$(sed -n 's/.*Overall exposure level for lapps.service: \([0-9.]*\).*/\1/p' <<<"$security")
check "exposure score ${score:-missing} <= $MAX_EXPOSURE" \
    awk -v s="${score:-99}" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: install/run/replace/purge tests need root (dpkg -i, a system user); run as root"
    # Under CI (.ci/run runs this as root) a skip would hide the tests that matter most.
    check "the install tests run (as root) under CI" test "${CI:-}" != true
    finish
fi

echo "== install, run, replace, reinstall, purge (root)"
# What follows purges any lapps package and deletes the lapps user and group, which a real
# installation would lose with its /var/lib/lapps and any file given to the group (a TLS
# key): on a machine that has them, only when asked.
if [ "${CI:-}" != true ] && [ "${LAPPS_PACKAGING_WIPE:-}" != 1 ] &&
    { dpkg-query -W lapps-ssse3 >/dev/null 2>&1 || dpkg-query -W lapps-avx2 >/dev/null 2>&1 ||
        getent passwd lapps >/dev/null; }; then
    echo "packaging.sh: this machine has a lapps package or the lapps user; the install tests" \
        "would purge the package (and /var/lib/lapps) and delete the user and group." \
        "Run them on a scratch machine or container, or set LAPPS_PACKAGING_WIPE=1." >&2
    exit 1
fi
# dpkg has no lock timeout of its own; another apt/dpkg run on the machine holds the lock for a
# while at most. Retries only that error, for up to 5 minutes.
dpkg_locked() { # dpkg_locked ARGS...: dpkg ARGS, waiting for the dpkg lock
    local deadline=$((SECONDS + 300)) out
    while :; do
        if out=$(dpkg "$@" </dev/null 2>&1); then
            echo "$out" | indent
            return 0
        fi
        if ! grep -q "lock was locked by another process" <<<"$out" || [ $SECONDS -ge $deadline ]; then
            echo "$out" | indent
            return 1
        fi
        sleep 2
    done
}
purge_all() { # every lapps package dpkg knows, half-installed or half-configured ones too
    local p status
    for p in lapps-ssse3 lapps-avx2; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        if [ -n "$status" ] && [ "$status" != not-installed ]; then
            dpkg_locked -P "$p" >/dev/null
        fi
    done
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
purge_all # a previous interrupted run
# Purge keeps the lapps user and group (as Debian does with system users): a run after an
# earlier one removes them, so that the install below makes them again.
if getent passwd lapps >/dev/null; then deluser --system --quiet lapps 2>/dev/null || true; fi
if getent group lapps >/dev/null; then delgroup --system --quiet lapps >/dev/null || true; fi

dpkg_locked -i "$(deb avx2)"
check "lapps-avx2 installed" installed lapps-avx2
check "lapps system user and group exist" \
    bash -c 'getent passwd lapps >/dev/null && getent group lapps >/dev/null'
check "/var/lib/lapps belongs to lapps" test "$(stat -c %U:%G /var/lib/lapps)" = lapps:lapps
check "/usr/bin/lapps is the avx2 build" grep -q "simd build: avx2," <<<"$(/usr/bin/lapps --version)"
check "without -c, outside a checkout, the packaged binary reads /etc/lapps" \
    grep -qx "configuration in /etc/lapps is valid" <<<"$(cd "$tmp" && /usr/bin/lapps --check-config)"
check "systemd-analyze verify of the installed unit prints nothing" \
    test -z "$(systemd-analyze verify /lib/systemd/system/lapps.service 2>&1)"

echo "-- running the installed server as lapps (tests/packaging_smoke.py)"
# In a network namespace of its own when possible, so that nothing else on the machine can hold
# port $PORT; the server still listens on the installed 127.0.0.1:$PORT.
if unshare --net true 2>/dev/null && command -v ip >/dev/null; then
    smoke=(unshare --net sh -c 'ip link set lo up && exec "$@"' _)
else
    smoke=()
fi
check "installed lapps: READY=1, echo over WebSocket, SIGTERM -> STOPPING=1" \
    "${smoke[@]}" python3 tests/packaging_smoke.py "$PORT"

# An operator's edit made before switching variants (new hardware, say) stays: both packages
# ship the same conffiles, and the new one takes them over as they are.
python3 - <<'PY'
import json
p = "/etc/lapps/ws.json"
w = json.load(open(p))
w["backlog"] = 777
open(p, "w").write(json.dumps(w, indent=2) + "\n")
PY
dpkg_locked -i "$(deb ssse3)"
replaced() { installed lapps-ssse3 && ! installed lapps-avx2; }
check "lapps-ssse3 replaced lapps-avx2" replaced
check "/usr/bin/lapps is now the ssse3 build" \
    grep -q "simd build: ssse3," <<<"$(/usr/bin/lapps --version)"
check "configuration and user kept across the replacement" \
    bash -c 'test -f /etc/lapps/ws.json && test -f /etc/lapps/lapps.json &&
        getent passwd lapps >/dev/null'
check "an edit of /etc/lapps/ws.json survives the switch to the other variant" \
    grep -q '"backlog": 777' /etc/lapps/ws.json
# dpkg keeps the replaced variant as "config-files", listing the conffiles it gave up as
# obsolete; an operator tidying up purges it. Its postrm must see the other variant and leave
# the shared configuration, state directory and unit enablement alone.
check "the replaced lapps-avx2 is left as config-files" \
    test "$(dpkg-query -W -f='${db:Status-Status}' lapps-avx2 2>/dev/null)" = config-files
check "the replaced lapps-avx2 purges" dpkg_locked -P lapps-avx2
wants=/etc/systemd/system/multi-user.target.wants/lapps.service
check "purging the replaced variant keeps the installed one's configuration, state and unit" \
    bash -c 'grep -q "\"backlog\": 777" /etc/lapps/ws.json && test -f /etc/lapps/lapps.json &&
        test "$(stat -c %U:%G /var/lib/lapps)" = lapps:lapps && test -L "$1" &&
        ! test -e /etc/systemd/system/lapps.service' _ "$wants"
check "lapps-ssse3 is still installed" installed lapps-ssse3

# The lapps user owns /var/lib/lapps: a symlink it puts there must not lead the next configure
# (run as root) to hand the symlink's target to lapps.
mkdir -p "$tmp/root-owned" && chmod 0755 "$tmp/root-owned"
rm -rf /var/lib/lapps/tmp /var/lib/lapps/deploy
ln -s "$tmp/root-owned" /var/lib/lapps/tmp
ln -s "$tmp/root-owned" /var/lib/lapps/deploy
dpkg_locked -i "$(deb ssse3)"
check "a reinstall leaves a directory the lapps user linked to alone" \
    test "$(stat -c %U:%G:%a "$tmp/root-owned")" = root:root:755
rm -f /var/lib/lapps/tmp /var/lib/lapps/deploy
check "an edit of /etc/lapps/ws.json survives a reinstall" grep -q '"backlog": 777' /etc/lapps/ws.json
check "the edited configuration is valid" /usr/bin/lapps -c /etc/lapps --check-config

# Makes /etc/lapps/ws.json one the binary refuses (a negative backlog), the install tests'
# stand-in for an operator's mistake.
refuse_ws_json() {
    python3 - <<'PY'
import json
p = "/etc/lapps/ws.json"
w = json.load(open(p))
w["backlog"] = -1
open(p, "w").write(json.dumps(w, indent=2) + "\n")
PY
}

# An upgrade over a configuration the new version refuses says so, and leaves the running
# server alone (under systemd it is not restarted into a failed unit; without it, the message
# says to fix the files before starting lapps again).
cp /etc/lapps/ws.json "$tmp/ws.json.good"
refuse_ws_json
refused=$(dpkg_locked -i "$(deb ssse3)" 2>&1 || true)
check "an upgrade over an invalid configuration names the error and does not restart" \
    bash -c 'grep -q "backlog" <<<"$1" && grep -q "fix the files above before starting lapps again" <<<"$1"' _ "$refused"
check "the package is configured all the same" installed lapps-ssse3
cp "$tmp/ws.json.good" /etc/lapps/ws.json

# A relative path in the files resolves against the unit's WorkingDirectory (/var/lib/lapps):
# the upgrade's check takes it from there too, not from dpkg's working directory.
cp /etc/lapps/lapps.json "$tmp/lapps.json.good"
cp -r /usr/share/lapps/apps /var/lib/lapps/apps-here
python3 - <<'PY'
import json
p = "/etc/lapps/lapps.json"
c = json.load(open(p))
c["directories"]["applications"] = "apps-here"
open(p, "w").write(json.dumps(c, indent=2) + "\n")
PY
pkg=$(realpath "$(deb ssse3)")
relative=$(cd / && dpkg_locked -i "$pkg" 2>&1 || true)
check "an upgrade checks a relative path from the unit's working directory" \
    bash -c '! grep -q "not valid for this version" <<<"$1"' _ "$relative"
cp "$tmp/lapps.json.good" /etc/lapps/lapps.json
rm -rf /var/lib/lapps/apps-here

# The check runs as the unit's user: applications only root may read pass a check run as root
# (dpkg's user), then the restart's ExecStartPre, as lapps, fails and the server is down.
install -d -o root -g root -m 0700 /var/lib/lapps/root-only
cp -r /usr/share/lapps/apps /var/lib/lapps/root-only/
python3 - <<'PY'
import json
p = "/etc/lapps/lapps.json"
c = json.load(open(p))
c["directories"]["applications"] = "/var/lib/lapps/root-only/apps"
open(p, "w").write(json.dumps(c, indent=2) + "\n")
PY
unreadable=$(cd / && dpkg_locked -i "$pkg" 2>&1 || true)
check "an upgrade checks the files as the lapps user (root-only applications are refused)" \
    bash -c 'grep -q "root-only/apps/.*Permission denied" <<<"$1" &&
        grep -q "fix the files above before starting lapps again" <<<"$1" &&
        ! grep -q "could not switch to the lapps user" <<<"$1"' _ "$unreadable"
cp "$tmp/lapps.json.good" /etc/lapps/lapps.json
rm -rf /var/lib/lapps/root-only

# Under a running systemd, with the server active. A stand-in: /run/systemd/system made for the
# time being, and a systemctl and deb-systemd-invoke that log what they are asked (is-active
# answers yes). A variant switch leaves the server serving until the new package's postinst has
# checked /etc/lapps with the new binary and restarts it; over files the new binary refuses it
# leaves it serving, as an upgrade does. A removal stops it.
echo "-- under a stand-in systemd"
fake=$tmp/fake-systemd
mkdir -p "$fake"
printf '#!/bin/sh\necho "systemctl $*" >>"%s"\ncase " $* " in *" is-active "*) test ! -e "%s" ;; esac\n' \
    "$tmp/systemd.log" "$tmp/stopped" >"$fake/systemctl"
printf '#!/bin/sh\necho "deb-systemd-invoke $*" >>"%s"\n' "$tmp/systemd.log" >"$fake/deb-systemd-invoke"
chmod +x "$fake/systemctl" "$fake/deb-systemd-invoke"
if [ ! -d /run/systemd/system ]; then
    mkdir /run/systemd/system
    made_run_systemd=1
fi
under_systemd() { (export PATH="$fake:$PATH" && "$@"); }
: >"$tmp/systemd.log"
under_systemd dpkg_locked -i "$(deb avx2)"
check "lapps-avx2 replaced lapps-ssse3 (under systemd)" \
    bash -c 'dpkg-query -W -f="\${Status}" lapps-avx2 | grep -q "ok installed$"'
check "a variant switch checks and restarts the running server, never stopping it first" \
    bash -c '! grep -q "invoke stop" "$1" && grep -qx "deb-systemd-invoke restart lapps.service" "$1"' \
    _ "$tmp/systemd.log"
# The replaced ssse3 purged first, so that installing it again is a fresh install as the
# first switch was (dpkg tells a package it left as config-files its old version).
dpkg_locked -P lapps-ssse3
refuse_ws_json
: >"$tmp/systemd.log"
refused=$(under_systemd dpkg_locked -i "$(deb ssse3)" 2>&1 || true)
check "a variant switch over files the new binary refuses leaves the running server alone" \
    bash -c 'grep -q "backlog" <<<"$1" && grep -q "the running server was not restarted" <<<"$1" &&
        ! grep -qE "invoke (stop|start|restart)" "$2"' _ "$refused" "$tmp/systemd.log"
cp "$tmp/ws.json.good" /etc/lapps/ws.json
# An install its preinst refuses (lapps-avx2 on a CPU without AVX2), after dpkg asked the
# installed variant's prerm to make way for it: dpkg puts that package back (its postinst
# abort-remove), and the server it never stopped is neither stopped nor restarted.
: >"$tmp/systemd.log"
(export LAPPS_CPUINFO="$tmp/cpu-ssse3" && under_systemd dpkg_locked -i "$(deb avx2)") || true
check "an install the preinst refuses leaves the installed variant and its server alone" \
    bash -c 'dpkg-query -W -f="\${Status}" lapps-ssse3 | grep -q "ok installed$" &&
        ! grep -qE "invoke (stop|start|restart)" "$1"' _ "$tmp/systemd.log"
: >"$tmp/systemd.log"
under_systemd dpkg_locked -r lapps-ssse3
check "dpkg -r stops the server" grep -qx "deb-systemd-invoke stop lapps.service" "$tmp/systemd.log"
# Installed again over the files the removal left, with the server stopped: files its binary
# refuses are named, and the server is not started (a unit that fails at once, and again
# every 2 s, tells the operator less than the install does).
touch "$tmp/stopped"
cp /etc/lapps/ws.json "$tmp/ws.json.kept"
refuse_ws_json
: >"$tmp/systemd.log"
refused=$(under_systemd dpkg_locked -i "$(deb ssse3)" 2>&1 || true)
check "an install over left files its binary refuses says so and starts nothing" \
    bash -c 'grep -q "backlog" <<<"$1" && grep -q "the server was not started" <<<"$1" &&
        ! grep -qE "invoke (start|restart)" "$2" &&
        dpkg-query -W -f="\${Status}" lapps-ssse3 | grep -q "ok installed$"' \
    _ "$refused" "$tmp/systemd.log"
cp "$tmp/ws.json.kept" /etc/lapps/ws.json
: >"$tmp/systemd.log"
under_systemd dpkg_locked -i "$(deb ssse3)"
check "a reinstall over valid files, with the server stopped, starts it" \
    grep -qE "deb-systemd-invoke (start|restart) lapps.service" "$tmp/systemd.log"
rm "$tmp/stopped"
: >"$tmp/systemd.log"
under_systemd dpkg_locked -r lapps-ssse3
if [ -n "$made_run_systemd" ]; then
    rmdir /run/systemd/system
    made_run_systemd=
fi

purge_all
gone=""
for path in /usr/bin/lapps /etc/lapps /usr/share/lapps /lib/systemd/system/lapps.service \
    /var/lib/lapps /usr/share/doc/lapps-ssse3 /usr/share/doc/lapps-avx2 \
    /etc/systemd/system/multi-user.target.wants/lapps.service /etc/systemd/system/lapps.service; do
    if [ -e "$path" ] || [ -L "$path" ]; then gone="$gone $path"; fi
done
check "dpkg -P removes every file${gone:+ (left:$gone)}" test -z "$gone"
check "dpkg -P keeps the lapps user and group (files may still be theirs)" \
    bash -c 'getent passwd lapps >/dev/null && getent group lapps >/dev/null'
check "dpkg no longer knows either package" \
    bash -c '! dpkg-query -W lapps-ssse3 lapps-avx2 >/dev/null 2>&1'

# A lapps user that exists without the lapps group (made by hand, or by a directory service):
# the install makes the group and goes on.
usermod -g nogroup lapps
delgroup --system --quiet lapps >/dev/null
dpkg_locked -i "$(deb avx2)" || true
check "an install with the lapps user but no lapps group makes the group and succeeds" \
    bash -c 'dpkg-query -W -f="\${Status}" lapps-avx2 | grep -q "ok installed$" &&
        getent group lapps >/dev/null && test "$(stat -c %U:%G /var/lib/lapps)" = lapps:lapps'
purge_all

finish
