#!/bin/sh
# Install mfad, mfactl and pam_mfa from this source tree.
#
#   packaging/install.sh [--no-build | --from DIR]
#
# Builds the release binaries (unless --no-build, or --from DIR which installs
# the artifacts already built in DIR, e.g. target/debug) and installs:
#   mfad          -> $PREFIX/sbin/mfad                    (0755)
#   mfactl        -> $PREFIX/bin/mfactl                   (0755)
#   pam_mfa.so    -> $PAM_MODULE_DIR/pam_mfa.so           (0644)
#   mfad.service  -> $SYSTEMD_UNIT_DIR/mfad.service       (0644)
#   mfad.toml     -> /etc/mfad/mfad.toml, only if absent  (0644)
#   pam profile   -> /usr/share/pam-configs/mfa           (0644, not enabled)
#   examples      -> $DOCDIR/examples/
#
# It never edits a file in /etc/pam.d, never enables the pam-auth-update
# profile, never starts or enables the service and never turns MFA on: the
# shipped config has `enabled = false`, so the module is a no-op until an
# administrator has enrolled and switched it on.
#
# Environment:
#   PREFIX            default /usr/local
#   DESTDIR           staging root prepended to every path (packaging)
#   PAM_MODULE_DIR    default: the system's PAM module directory, e.g.
#                     /usr/lib/x86_64-linux-gnu/security
#   SYSTEMD_UNIT_DIR  default /etc/systemd/system
#   DOCDIR            default $PREFIX/share/doc/pam_mfa
#   CARGO_TARGET_DIR  where cargo builds, default ./target
set -eu

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'
}

build=yes
from=
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
        --no-build) build=no ;;
        --from)
            [ $# -gt 0 ] || { echo "install.sh: --from needs a directory" >&2; exit 2; }
            from=$1; build=no; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SYSTEMD_UNIT_DIR=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/pam_mfa}
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in
    /*) ;;
    *) target_dir=$root/$target_dir ;;
esac
release=${from:-$target_dir/release}
case "$release" in
    /*) ;;
    *) release=$PWD/$release ;;
esac

# The system's PAM module directory: Debian/Ubuntu multiarch first, then the
# usual places of other distributions.
pam_module_dir() {
    multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || true)
    if [ -n "$multiarch" ] && [ -d "/usr/lib/$multiarch/security" ]; then
        echo "/usr/lib/$multiarch/security"
        return
    fi
    if [ -n "$multiarch" ] && [ -d "/lib/$multiarch/security" ]; then
        echo "/lib/$multiarch/security"
        return
    fi
    for dir in /usr/lib64/security /lib64/security /usr/lib/security; do
        if [ -f "$dir/pam_unix.so" ]; then
            echo "$dir"
            return
        fi
    done
    echo /lib/security
}
PAM_MODULE_DIR=${PAM_MODULE_DIR:-$(pam_module_dir)}

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: installing into the system needs root (or set DESTDIR to stage)" >&2
    exit 1
fi

if [ "$build" = yes ]; then
    echo "Building release binaries (cargo build --release --locked -p mfad -p pam_mfa)..."
    (cd "$root" && cargo build --release --locked -p mfad -p pam_mfa)
fi

for artifact in mfad mfactl libpam_mfa.so; do
    if [ ! -f "$release/$artifact" ]; then
        echo "install.sh: $release/$artifact is missing; build first or drop --no-build" >&2
        exit 1
    fi
done

say() { echo "  $*"; }

echo "Installing (DESTDIR=${DESTDIR:-<none>}, PREFIX=$PREFIX):"

install -d -m 0755 "$DESTDIR$PREFIX/sbin" "$DESTDIR$PREFIX/bin"
install -m 0755 "$release/mfad" "$DESTDIR$PREFIX/sbin/mfad"
say "$PREFIX/sbin/mfad"
install -m 0755 "$release/mfactl" "$DESTDIR$PREFIX/bin/mfactl"
say "$PREFIX/bin/mfactl"

install -d -m 0755 "$DESTDIR$PAM_MODULE_DIR"
install -m 0644 "$release/libpam_mfa.so" "$DESTDIR$PAM_MODULE_DIR/pam_mfa.so"
say "$PAM_MODULE_DIR/pam_mfa.so"

# The unit names /usr/local/sbin/mfad; follow PREFIX.
install -d -m 0755 "$DESTDIR$SYSTEMD_UNIT_DIR"
unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp"' EXIT
sed "s#/usr/local/sbin/mfad#$PREFIX/sbin/mfad#g" "$root/packaging/mfad.service" > "$unit_tmp"
install -m 0644 "$unit_tmp" "$DESTDIR$SYSTEMD_UNIT_DIR/mfad.service"
say "$SYSTEMD_UNIT_DIR/mfad.service"

install -d -m 0755 "$DESTDIR/etc/mfad"
if [ -e "$DESTDIR/etc/mfad/mfad.toml" ]; then
    say "/etc/mfad/mfad.toml exists: kept as it is (the shipped default is in the examples)"
else
    install -m 0644 "$root/packaging/mfad.toml" "$DESTDIR/etc/mfad/mfad.toml"
    say "/etc/mfad/mfad.toml (enabled = false)"
fi

install -d -m 0755 "$DESTDIR/usr/share/pam-configs"
install -m 0644 "$root/packaging/pam-configs/mfa" "$DESTDIR/usr/share/pam-configs/mfa"
say "/usr/share/pam-configs/mfa (pam-auth-update profile, not enabled)"

examples=$DOCDIR/examples
install -d -m 0755 "$DESTDIR$examples/pam.d"
install -m 0644 "$root/packaging/mfad.toml" "$DESTDIR$examples/mfad.toml"
for stack in "$root"/packaging/pam.d/*; do
    install -m 0644 "$stack" "$DESTDIR$examples/pam.d/$(basename "$stack")"
done
say "$examples/ (mfad.toml and pam.d stacks)"

cat <<EOF

Nothing in /etc/pam.d was changed and MFA is not switched on. Next steps:
  1. Review /etc/mfad/mfad.toml (admin_group, roles, elevation, bypass).
  2. Start the daemon:
       systemctl daemon-reload && systemctl enable --now mfad
  3. Enroll: each user runs \`mfactl setup\`; members of the admin group
     (default mfa-admins) can \`mfactl user setup USER\`. For sudo/su, an
     administrator approves devices: \`mfactl user authorize USER --code CODE\`.
  4. Add pam_mfa to the PAM stacks, keeping a root shell open meanwhile:
       pam-auth-update --enable mfa        (all services using common-auth)
     or one service at a time, after the examples in
       $examples/pam.d/
     (sshd also needs KbdInteractiveAuthentication yes and
     AuthenticationMethods in sshd_config; see the sshd example).
  5. Turn it on: set \`enabled = true\` in /etc/mfad/mfad.toml, then
       systemctl reload mfad
EOF
