#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, builds,
# lints, and runs every unit and end-to-end test. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  oathtool zbar-tools            # codes and QR decoding checked by outside tools
  libpam0g-dev libclang-dev      # pam-bindings links libpam; pam-client builds with bindgen
  pamtester libpam-wrapper       # PAM stacks of the tests' own, without touching /etc/pam.d
  openssh-server openssh-client  # sshd under a symlinked name, keyboard-interactive
  sudo expect util-linux passwd  # sudo -S, su, setpriv, useradd
  systemd                        # systemd-analyze verify for the unit file
  python3                        # a local user flooding the socket (attack test)
  strace                         # what mfad syncs before it answers (fault test)
  postgresql openssl             # scratch clusters for the PostgreSQL store, a throwaway CA for TLS
  dovecot-imapd                  # a real IMAP server that answers every prompt with the password (legacy suite)
  dpkg-dev scdoc lintian man-db  # the .deb: shlibs, man pages from scdoc, lintian, man --warnings
)
. tests/ensure-packages.sh
ensure_packages "${packages[@]}"

echo "== format"
cargo fmt --all -- --check
echo "== build"
cargo build --workspace --all-targets --locked
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== package"
# Built once here (release); the package suites install and lint this file.
MFA_DEB=$(bash packaging/build-deb.sh | tee /dev/stderr | tail -n 1)
export MFA_DEB
echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$log"
echo "== fuzz"
bash tests/fuzz.sh
# One closing line for the whole run (cargo's last line is a crate's
# doc-tests, often empty); never report success on zero tests.
passed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
if [ "$passed" -eq 0 ]; then
  echo "no test ran" >&2
  exit 1
fi
echo "tests: $passed passed, $failed failed"
