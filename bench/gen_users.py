#!/usr/bin/env python3
"""Generates the user populations of the scale scenarios.

usage: gen_users.py jsonl N OUT MEASURED   # for `mfactl user import OUT`
       gen_users.py oath  N OUT MEASURED   # a pam_oath users file

Users are u0000001 .. uN, each with its own random 160-bit secret, HOTP,
counter 0. The last user is the one the benchmark logs in (the worst case
for a store that scans); its line `USER BASE32 FIRST_COUNTER` is written to
MEASURED for pam_bench --secret-file. The first code offered is counter 1,
which any module accepts whether it reads "counter 0" as the last counter
used or the next one expected.
"""
import base64
import json
import os
import sys


def main() -> None:
    if len(sys.argv) != 5 or sys.argv[1] not in ("jsonl", "oath"):
        sys.exit(__doc__)
    kind, n, out, measured = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    width = max(7, len(str(n)))
    with open(out, "w") as f:
        for i in range(1, n + 1):
            user = f"u{i:0{width}d}"
            raw = os.urandom(20)
            secret = base64.b32encode(raw).decode()
            if kind == "jsonl":
                f.write(json.dumps({"user": user, "type": "hotp", "secret": secret, "counter": 0}) + "\n")
            else:
                f.write(f"HOTP {user} - {raw.hex()}\n")
    os.chmod(out, 0o600)
    with open(measured, "w") as f:
        f.write(f"{user} {secret} 1\n")


if __name__ == "__main__":
    main()
