#!/usr/bin/env bash
# The main job, end to end, on the embedded default store: start mfad on a
# SQLite file in a scratch directory, enroll a user (the QR code is drawn
# here; oathtool plays the phone), check the key, then log in through the
# real PAM module with pamtester. Nothing under /etc is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

. tests/ensure-packages.sh
ensure_packages oathtool pamtester libpam-wrapper libpam0g-dev libclang-dev
cargo build --workspace --locked -q

bin=$PWD/target/debug
dir=$(mktemp -d /tmp/mfad-demo.XXXXXX)
cat > "$dir/mfad.toml" <<TOML
enabled = true
socket = "$dir/mfad.sock"
default_level = "always"
[store]
path = "$dir/mfad.db"
key_file = "$dir/secret.key"
TOML
"$bin/mfad" --config "$dir/mfad.toml" --syslog-socket "$dir/no-syslog" 2> "$dir/mfad.log" &
mfad_pid=$!
trap 'kill $mfad_pid 2>/dev/null; wait $mfad_pid 2>/dev/null; echo; echo "== audit trail"; cat "$dir/mfad.log"; rm -rf "$dir"' EXIT
for _ in $(seq 50); do [ -S "$dir/mfad.sock" ] && break; sleep 0.1; done
mfactl() { "$bin/mfactl" --socket "$dir/mfad.sock" "$@"; }

echo "== enroll 'demo': answer the barcode question, show the QR code, then type the code"
mkfifo "$dir/answers"
( echo y
  until grep -q 'secret=' "$dir/shown" 2>/dev/null; do sleep 0.1; done
  secret=$(grep -o 'secret=[A-Z2-7]*' "$dir/shown" | head -1 | cut -d= -f2)
  echo "$secret" > "$dir/secret"
  oathtool -b --totp "$secret" ) > "$dir/answers" &
mfactl user setup demo --type totp < "$dir/answers" | tee "$dir/shown"
secret=$(cat "$dir/secret")

echo "== check value (mfad vs oathtool at counter 0)"
echo "mfad:     $(mfactl user verify demo)"
echo "oathtool: $(oathtool -b --hotp -c 0 "$secret")"

echo "== log in through pam_mfa with pamtester (code of the next 30 s step)"
mkdir "$dir/pam.d"
echo "auth required $bin/libpam_mfa.so socket=$dir/mfad.sock" > "$dir/pam.d/demo"
code=$(oathtool -b --totp -N "now + 30 seconds" "$secret")
echo "$code" | PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$dir/pam.d" LD_PRELOAD=libpam_wrapper.so \
  pamtester -I rhost=127.0.0.1 demo demo authenticate
echo "== the same code again is a replay"
if echo "$code" | PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$dir/pam.d" LD_PRELOAD=libpam_wrapper.so \
  pamtester -I rhost=127.0.0.1 demo demo authenticate; then echo "UNEXPECTED: replay accepted"; exit 1; fi
mfactl user show demo
