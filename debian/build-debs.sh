#!/usr/bin/env bash
# Builds the lapps-ssse3 and lapps-avx2 .deb packages into target/debian/ with dpkg-deb (no
# debhelper, no cargo-deb). One build per variant, each in its own target directory:
#
#   LAPPS_SIMD=<variant> RUSTFLAGS="-C target-feature=<features>" \
#       cargo build --release --target x86_64-unknown-linux-gnu --target-dir target/deb-<variant>
#
# --target keeps RUSTFLAGS off build scripts and proc-macros, so the avx2 package also builds on
# a machine without AVX2. The installed configuration is generated from etc/lapps/ with the
# repository paths rewritten to the installed layout (see installed_config below), so services
# added to etc/lapps/lapps.json are packaged without a second copy to maintain.
#
# Usage: debian/build-debs.sh [ssse3] [avx2]     (default: both)
# Needs: cargo, dpkg-deb, python3, gzip, strip (binutils); dpkg-shlibdeps (dpkg-dev) when present.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TRIPLE=x86_64-unknown-linux-gnu
readonly OUT=target/debian
readonly MAINTAINER="LAppS Maintainers <lapps@example.org>"

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(ssse3 avx2)

# Only what each variant promises: LLVM's +avx implies SSE3 up to SSE4.2, and src/cpu.rs checks
# every implied feature at start-up.
target_features() {
    case "$1" in
        ssse3) echo "+sse3,+ssse3" ;;
        avx2) echo "+avx,+avx2" ;;
        *) echo "unknown variant $1 (ssse3 or avx2)" >&2; return 1 ;;
    esac
}

# Whether this machine's CPU has what the variant's binary needs (avx2 implies avx).
cpu_runs() {
    case "$1" in
        avx2) grep -qw avx2 /proc/cpuinfo ;;
        *) grep -qw ssse3 /proc/cpuinfo ;;
    esac
}

other_variant() {
    case "$1" in
        ssse3) echo avx2 ;;
        avx2) echo ssse3 ;;
    esac
}

cpu_description() {
    case "$1" in
        ssse3) echo "x86-64 CPUs with SSSE3 (Intel Core 2, AMD Bulldozer and later)" ;;
        avx2) echo "x86-64 CPUs with AVX2 (Intel Haswell, AMD Excavator and later)" ;;
    esac
}

# The Debian version is the changelog's; its upstream part must be Cargo.toml's version.
deb_version() {
    local v crate
    v=$(sed -n '1s/^lapps (\([^)]*\)).*/\1/p' debian/changelog)
    crate=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
    if [ "${v%-*}" != "$crate" ]; then
        echo "debian/changelog version $v does not match Cargo.toml version $crate" >&2
        return 1
    fi
    echo "$v"
}

# Writes the installed ws.json and lapps.json into $1: the repository's files with every path
# pointing into the checkout rewritten to the installed layout. ws.json keeps 127.0.0.1 (open
# it with "ip": "0.0.0.0" in /etc/lapps/ws.json) and drops workers.workers (one per core) and
# workers.max_connections (the default, fitted to the descriptor limit).
installed_config() {
    python3 - etc/lapps "$1" <<'PY'
import json, pathlib, sys

src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
# Longest prefix first: ./target/lapps/tmp before ./target/lapps.
REWRITE = [
    ("./lua/apps", "/usr/share/lapps/apps"),
    ("./lua/lib", "/usr/share/lapps/lib"),
    ("./etc/lapps", "/etc/lapps"),
    ("./target/lapps/tmp", "/var/lib/lapps/tmp"),
    ("./target/lapps", "/var/lib/lapps"),
]

def rewrite(v):
    if isinstance(v, dict):
        return {k: rewrite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rewrite(x) for x in v]
    if isinstance(v, str):
        for old, new in REWRITE:
            if v == old or v.startswith(old + "/"):
                return new + v[len(old):]
    return v

for name in ("ws.json", "lapps.json"):
    data = rewrite(json.loads((src / name).read_text()))
    if name == "ws.json":
        # The repository runs 2 IO workers; an installed server takes its default, one per
        # core (at most 32), instead of being held to 2 on a large host.
        data.get("workers", {}).pop("workers", None)
        # Left to its default, max_connections is lowered at start-up to what LimitNOFILE
        # covers (10 or more cores): no descriptor warning at every start of a large host.
        data.get("workers", {}).pop("max_connections", None)
    if name == "lapps.json":
        # Demos that only write to the log (a line a second, ~86,400 a day in the journal of
        # every fresh install): installed, ready to turn on with "auto_start": true.
        for demo in ("mqr_sender", "mqr_receiver"):
            if demo in data.get("services", {}):
                data["services"][demo]["auto_start"] = False
        d = data.setdefault("directories", {})
        d.update({
            "applications": "/usr/share/lapps/apps",
            "lib": "/usr/share/lapps/lib",
            "app_conf_dir": "/etc/lapps/apps",
            "workdir": "/var/lib/lapps",
            "tmp": "/var/lib/lapps/tmp",
        })
    text = json.dumps(data, indent=2) + "\n"
    if "./" in text:
        sys.exit(f"{name}: a relative path is left after rewriting: {text}")
    (dst / name).write_text(text)
PY
}

# Conflicts/Replaces name the other variant only: a Conflicts on the virtual "lapps" that both
# provide would make plain `dpkg -i` refuse the swap (the installed package's conflict is not
# resolved by removal), while naming the real package lets dpkg remove the one it replaces.

# libc6/libgcc-s1 lower bounds from the symbols the binary uses, as ${shlibs:Depends} would.
shlib_depends() {
    local bin=$1 dir line
    if command -v dpkg-shlibdeps >/dev/null 2>&1; then
        dir=$(mktemp -d)
        mkdir -p "$dir/debian"
        printf 'Source: lapps\n\nPackage: lapps\nArchitecture: amd64\n' >"$dir/debian/control"
        line=$(cd "$dir" && dpkg-shlibdeps -O "$OLDPWD/$bin" 2>/dev/null) || line=""
        rm -rf "$dir"
        if [ -n "$line" ]; then
            echo "${line#shlibs:Depends=}"
            return
        fi
    fi
    echo "libc6 (>= 2.34), libgcc-s1 (>= 4.2)"
}

build_binary() {
    local v=$1
    echo "== cargo build ($v): LAPPS_SIMD=$v RUSTFLAGS=\"-C target-feature=$(target_features "$v")\""
    env -u CARGO_ENCODED_RUSTFLAGS LAPPS_SIMD="$v" \
        RUSTFLAGS="-C target-feature=$(target_features "$v")" \
        cargo build --locked --release --target "$TRIPLE" --target-dir "target/deb-$v" \
        --bin lapps
}

assemble() {
    local v=$1 version=$2 pkg="lapps-$1" root bin other
    other=$(other_variant "$v")
    bin="target/deb-$v/$TRIPLE/release/lapps"
    root="$OUT/root-$v"
    rm -rf "$root"
    umask 022

    install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/lapps/apps" \
        "$root/usr/share/lapps/apps" "$root/usr/share/lapps/lib" "$root/lib/systemd/system" \
        "$root/usr/share/doc/$pkg/docs" "$root/usr/share/man/man1" \
        "$root/usr/share/lapps/clients/js"
    install -m 0755 "$bin" "$root/usr/bin/lapps"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/lapps"

    installed_config "$root/etc/lapps"
    if [ -d etc/lapps/apps ]; then
        cp -R etc/lapps/apps/. "$root/etc/lapps/apps/"
    fi
    # Whatever apps and shared modules the tree has at build time.
    [ -d lua/apps ] && cp -R lua/apps/. "$root/usr/share/lapps/apps/"
    [ -d lua/lib ] && cp -R lua/lib/. "$root/usr/share/lapps/lib/"
    install -m 0644 systemd/lapps.service "$root/lib/systemd/system/lapps.service"
    install -m 0644 debian/copyright "$root/usr/share/doc/$pkg/copyright"
    # The references an operator and an app developer work from, laid out as in the tree
    # (README.md links docs/...), compressed as Debian policy 12.3 asks of docs over 4 KiB.
    gzip -9n <README.md >"$root/usr/share/doc/$pkg/README.md.gz"
    local doc
    for doc in docs/*.md; do
        gzip -9n <"$doc" >"$root/usr/share/doc/$pkg/$doc.gz"
    done
    # The browser client is served, not read: as it is, beside its example page; its README
    # with the other docs.
    install -m 0644 clients/js/lapps.mjs clients/js/example.html clients/js/example.mjs \
        "$root/usr/share/lapps/clients/js/"
    install -d "$root/usr/share/doc/$pkg/clients/js"
    gzip -9n <clients/js/README.md >"$root/usr/share/doc/$pkg/clients/js/README.md.gz"
    gzip -9n <debian/changelog >"$root/usr/share/doc/$pkg/changelog.Debian.gz"
    # What an upgrade may need the operator to change (apt-listchanges shows it before).
    gzip -9n <debian/NEWS >"$root/usr/share/doc/$pkg/NEWS.Debian.gz"
    # The page's header names the version being packaged.
    sed "1s/\"lapps [^\"]*\"/\"lapps ${version%-*}\"/" debian/lapps.1 | gzip -9n \
        >"$root/usr/share/man/man1/lapps.1.gz"
    find "$root" -path "$root/DEBIAN" -prune -o -type d -exec chmod 0755 {} +
    find "$root" -path "$root/DEBIAN" -prune -o -type f ! -path "$root/usr/bin/lapps" \
        -exec chmod 0644 {} +

    # The packaged configuration must load with the packaged binary, which refuses to start
    # on a CPU without its variant's features: there, the build machine's own variant checks it.
    local checker="$root/usr/bin/lapps"
    if ! cpu_runs "$v"; then
        checker="target/deb-$(other_variant "$v")/$TRIPLE/release/lapps"
        [ -x "$checker" ] || checker=target/release/lapps
        [ -x "$checker" ] || cargo build --locked --release --bin lapps
        echo "== this CPU cannot run the $v binary: checking its configuration with $checker"
    fi
    # The installed paths (/usr/share/lapps/...) exist only after installation: check a copy of
    # the packaged configuration that points into the staged tree, so that --check-config also
    # compiles the packaged Lua apps.
    local staged_conf="$OUT/check-conf-$v"
    rm -rf "$staged_conf"
    mkdir -p "$staged_conf"
    for f in ws.json lapps.json; do
        sed "s#\"/usr/share/lapps/#\"$root/usr/share/lapps/#g; s#\"/etc/lapps/#\"$root/etc/lapps/#g" \
            "$root/etc/lapps/$f" >"$staged_conf/$f"
    done
    "$checker" -c "$staged_conf" --check-config >/dev/null
    rm -rf "$staged_conf"

    for script in postinst prerm postrm; do
        install -m 0755 "debian/$script" "$root/DEBIAN/$script"
    done
    local advice="install lapps-ssse3 instead"
    [ "$v" = ssse3 ] && advice="no lapps package runs on it"
    sed "s/@VARIANT@/$v/g; s/@FLAG@/$v/g; s/@ADVICE@/$advice/g" debian/preinst >"$root/DEBIAN/preinst"
    chmod 0755 "$root/DEBIAN/preinst"
    (cd "$root" && find etc -type f | sort | sed 's|^|/|') >"$root/DEBIAN/conffiles"
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
        xargs -0 md5sum) >"$root/DEBIAN/md5sums"
    chmod 0644 "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

    local size depends
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    depends="adduser, $(shlib_depends "$bin")"
    cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Source: lapps
Version: $version
Architecture: amd64
Maintainer: $MAINTAINER
Installed-Size: $size
Depends: $depends
Provides: lapps
Conflicts: lapps-$other
Replaces: lapps-$other
Section: net
Priority: optional
Description: Lua Application Server over WebSockets ($v build)
 LAppS accepts WebSocket (RFC 6455) connections and hands every message to a
 Lua application running in LuaJIT, or to a built-in service. Installs the
 lapps server, a sandboxed systemd unit, the example applications and the
 shared Lua modules.
 .
 This package is built for
 $(cpu_description "$v").
 lapps-$other is the same server built for other CPUs; installing one
 replaces the other.
EOF
    chmod 0644 "$root/DEBIAN/control"

    dpkg-deb --root-owner-group --build "$root" "$OUT/${pkg}_${version}_amd64.deb"
}

mkdir -p "$OUT"
version=$(deb_version)
for v in "${variants[@]}"; do
    target_features "$v" >/dev/null
    build_binary "$v"
    assemble "$v" "$version"
done
ls -l "$OUT"/*.deb
