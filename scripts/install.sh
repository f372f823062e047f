#!/usr/bin/env bash
# Installs cocos-rs: the three binaries (cocos-measure, cocos-hal, cocos-manager, built
# with `cargo install --locked --path …`), the manager's systemd unit, its environment
# file /etc/cocos/manager.env (an existing one is kept), the README, and the system user
# the unit runs as.
#
# Usage: scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--bins-from DIR]
#   --prefix DIR     where bin/ and share/ go (default /usr/local)
#   --destdir DIR    stage everything under DIR (packaging, tests): no user is created
#                    and systemd is not told
#   --bins-from DIR  copy already built binaries from DIR (e.g. target/release)
#                    instead of building them
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prefix=/usr/local destdir="" bins_from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --destdir) destdir="$2"; shift 2 ;;
        --bins-from) bins_from="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac

root="$destdir$prefix"
install -d -m 0755 "$root/bin"
if [ -n "$bins_from" ]; then
    for b in cocos-measure cocos-hal cocos-manager; do
        [ -x "$bins_from/$b" ] || { echo "install.sh: $bins_from/$b missing (build it first)" >&2; exit 2; }
        install -m 0755 "$bins_from/$b" "$root/bin/$b"
    done
else
    for p in measure hal manager; do
        echo "install.sh: building and installing $p (release)"
        cargo install --locked --quiet --path "$p" --root "$root"
    done
    rm -f "$root/.crates.toml" "$root/.crates2.json"
fi

# The unit, pointing at the binary just installed.
unit="$destdir/etc/systemd/system/cocos-manager.service"
install -d -m 0755 "$(dirname "$unit")"
sed "s|/usr/local/bin/cocos-manager|$prefix/bin/cocos-manager|; s|/usr/local/share/doc|$prefix/share/doc|" \
    packaging/cocos-manager.service >"$unit.tmp"
chmod 0644 "$unit.tmp"
mv "$unit.tmp" "$unit"

# The environment file: never overwrite an operator's.
env_file="$destdir/etc/cocos/manager.env"
install -d -m 0755 "$destdir/etc/cocos"
if [ -e "$env_file" ]; then
    echo "install.sh: keeping $env_file (the shipped one is packaging/manager.env)"
else
    # systemd (root) reads it for the service: no one else needs to.
    install -m 0600 packaging/manager.env "$env_file"
fi
install -D -m 0644 README.md "$root/share/doc/cocos-rs/README.md"
install -D -m 0644 LICENSE "$root/share/doc/cocos-rs/LICENSE"

if [ -z "$destdir" ]; then
    if ! id cocos-manager >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/cocos-manager --no-create-home \
            --shell /usr/sbin/nologin cocos-manager
        getent group kvm >/dev/null && usermod -aG kvm cocos-manager
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        echo "install.sh: installed; set MANAGER_RELEASE in $env_file, then: systemctl enable --now cocos-manager"
    fi
fi
echo "install.sh: done ($root/bin: cocos-measure cocos-hal cocos-manager; $unit; $env_file)"
