#!/usr/bin/env bash
# An auditor's walk-through: a ledger records a WAL segment, its
# verification and a legal hold; the auditor pins a checkpoint; more is
# appended; the operator exports the segment's chain of custody with a
# consistency proof from the pinned checkpoint; the auditor verifies it
# offline with the ledger's public key — and sees a tampered copy fail.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tidemark-cli
tm() { ./target/release/tidemark "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TIDEMARK_LEDGER="$work/ledger"

tm init --origin tidemark.example/walkthrough >/dev/null
tm key new --name pg-agent --out "$work/agent.key" >/dev/null
tm key new --name ops --out "$work/ops.key" >/dev/null
tm key enroll --pub "$work/agent.key.pub" --roles agent --signer "$TIDEMARK_LEDGER/keys/admin.key"
tm key enroll --pub "$work/ops.key.pub" --roles operator --signer "$TIDEMARK_LEDGER/keys/admin.key"
seg=000000010000000000000003
zeros=$(printf '0%.0s' $(seq 64))
tm append --signer "$work/agent.key" <<NDJSON
{"kind":"pg.wal_archived","body":{"component":"pg:main","timeline":1,"segment":"$seg","size_bytes":16777216,"blake3":"$zeros","sha256":"$zeros","location":"/archive/$seg"}}
{"kind":"artifact.verified","body":{"artifact":"pg:main/wal/$seg","method":"re-read and blake3","outcome":"ok"}}
NDJSON
echo '{"kind":"artifact.legal_hold","body":{"artifact":"pg:main/wal/'$seg'","status":"set","reason":"case 2026-117"}}' | tm append --signer "$work/ops.key"

echo "--- the auditor pins today's checkpoint and the verifier key"
tm checkpoint > "$work/pinned-checkpoint.txt"
tm key show --ledger-key > "$work/ledger.vkey"

echo '{"kind":"pg.position","body":{"component":"pg:main","lsn":"0/4000000","timeline":1,"observed_at":"2026-11-23T02:00:00.000000Z"}}' | tm append --signer "$work/agent.key"

echo "--- custody of the segment"
tm custody "pg:main/wal/$seg"

echo "--- export it, with a consistency proof from the pinned checkpoint"
tm export --artifact "pg:main/wal/$seg" --out "$work/custody.tar" --previous-checkpoint "$work/pinned-checkpoint.txt"

echo "--- the auditor verifies offline: the export, the public key, the pinned checkpoint"
tm verify-export "$work/custody.tar" --ledger-key "$work/ledger.vkey" --previous-checkpoint "$work/pinned-checkpoint.txt"

echo "--- a tampered copy fails"
mkdir "$work/tampered" && tar -xf "$work/custody.tar" -C "$work/tampered"
sed -i 's/case 2026-117/case 2026-118/' "$work"/tampered/export/entries/*.json
if tm verify-export "$work/tampered/export" --ledger-key "$work/ledger.vkey"; then
  echo "tampering went unnoticed" >&2; exit 1
fi
echo "(refused, as it must be)"
