#!/usr/bin/env bash
# Build the Debian package libpam-mfa:
#
#   bash packaging/build-deb.sh
#
# The last line of output is the path of the .deb (in target/debian/).
# Needs cargo, dpkg-dev (dpkg-shlibdeps) and scdoc (the man pages of
# pam_mfa(8) and mfad.toml(5)); `apt-get install dpkg-dev scdoc`.
#
# Files are staged by packaging/install.sh (DESTDIR, PREFIX=/usr): the one
# list of what is installed where. This script adds what only a package
# has: man pages, shell completions, /usr/share/doc, the maintainer scripts
# in packaging/debian/ and the control file.
#
# lintian: no errors. Warnings kept, and why (tests/tests/package_docs.rs
# fails on a warning not listed here):
#   - initial-upload-closes-no-bugs: the package is built from this tree,
#     not uploaded to Debian, so there is no ITP bug for its changelog to close.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in
    /*) ;;
    *) target_dir=$root/$target_dir ;;
esac
release=$target_dir/release

for tool in cargo dpkg-deb dpkg-shlibdeps dpkg-architecture scdoc; do
    command -v "$tool" >/dev/null || {
        echo "build-deb.sh: $tool is missing (apt-get install dpkg-dev scdoc)" >&2
        exit 1
    }
done

package=libpam-mfa
upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
version=$upstream-1
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
head -1 packaging/debian/changelog | grep -qF "$package ($version)" || {
    echo "build-deb.sh: packaging/debian/changelog does not start with $package ($version)" >&2
    exit 1
}

echo "== building (release)"
cargo build --release --locked -p mfad -p pam_mfa
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Man pages of mfactl and mfad, and completions, from the clap definitions.
cargo run --release --locked -q -p mfad --example gen_docs -- "$work/gen"

stage=$work/root
mkdir -p "$stage"
chmod 0755 "$stage"
umask 022
echo "== staging"
DESTDIR=$stage PREFIX=/usr SYSTEMD_UNIT_DIR=/lib/systemd/system \
    PAM_MODULE_DIR=/usr/lib/$multiarch/security DOCDIR=/usr/share/doc/$package \
    sh packaging/install.sh --from "$release" | sed -n '/^Installing/,/^$/p'

strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$stage/usr/sbin/mfad" "$stage/usr/bin/mfactl" "$stage/usr/lib/$multiarch/security/pam_mfa.so"

man=$stage/usr/share/man
install -d -m 0755 "$man/man1" "$man/man5" "$man/man8"
for page in "$work"/gen/man/*; do
    section=${page##*.}
    gzip -9n <"$page" >"$man/man$section/$(basename "$page").gz"
done
for source in packaging/man/*.scd; do
    name=$(basename "$source" .scd)
    section=${name##*.}
    scdoc <"$source" | gzip -9n >"$man/man$section/$name.gz"
done
chmod 0644 "$man"/man*/*

completions=$work/gen/completions
install -D -m 0644 "$completions/mfactl.bash" "$stage/usr/share/bash-completion/completions/mfactl"
install -D -m 0644 "$completions/_mfactl" "$stage/usr/share/zsh/vendor-completions/_mfactl"
install -D -m 0644 "$completions/mfactl.fish" "$stage/usr/share/fish/vendor_completions.d/mfactl.fish"

doc=$stage/usr/share/doc/$package
install -d -m 0755 "$doc"
install -m 0644 packaging/debian/copyright "$doc/copyright"
gzip -9n <packaging/debian/changelog >"$doc/changelog.Debian.gz"
gzip -9n <README.md >"$doc/README.md.gz"
chmod 0644 "$doc"/*.gz

# The control area.
install -d -m 0755 "$stage/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
echo /etc/mfad/mfad.toml >"$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/conffiles"
# Library dependencies as Debian computes them (dpkg-shlibdeps needs a
# debian/control to run from).
mkdir -p "$work/src/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$package" "$package" >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O -e"$stage/usr/sbin/mfad" -e"$stage/usr/bin/mfactl" \
    -e"$stage/usr/lib/$multiarch/security/pam_mfa.so" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: pam_mfa developers <pam-mfa@example.org>
Installed-Size: $size
Depends: $shlibs, libpam-runtime
Section: admin
Priority: optional
Description: two-factor authentication for PAM logins (one-time codes)
 pam_mfa is a PAM module that asks for a one-time code (TOTP or HOTP, as
 authenticator apps make) at ssh, console, sudo and su logins. The daemon
 mfad holds the secrets, encrypted at rest, and decides per login by user,
 role, service and source address; mfactl enrolls devices and administers.
 .
 Installing changes no PAM stack and leaves MFA off: /etc/mfad/mfad.toml
 has enabled = false, the pam-auth-update profile "mfa" is not enabled, and
 the mfad service is neither enabled nor started.
 .
 Warning: purging the package deletes /var/lib/mfad (every enrolled device
 and recovery code) and the key file /etc/mfad/secret.key. Back them up
 before a purge if the enrollments are to be kept; removing the package
 without purging keeps them.
CONTROL
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

out=$target_dir/debian
mkdir -p "$out"
deb=$out/${package}_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
