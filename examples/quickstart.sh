#!/usr/bin/env bash
# The main job on the embedded default: a ledger in ./tidemark-data, an
# agent key, a few backup facts appended, the whole ledger verified, and the
# signed checkpoint an auditor would pin. Safe to run again: it reuses the
# ledger and keys it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tidemark-cli
tm() { ./target/release/tidemark "$@"; }
export TIDEMARK_LEDGER="${TIDEMARK_LEDGER:-./tidemark-data}"

if [ ! -d "$TIDEMARK_LEDGER/db" ]; then
  tm init --origin "tidemark.local/quickstart"
fi
if [ ! -f "$TIDEMARK_LEDGER/keys/agent.key" ]; then
  tm key new --name pg-agent --out "$TIDEMARK_LEDGER/keys/agent.key"
  tm key enroll --pub "$TIDEMARK_LEDGER/keys/agent.key.pub" --roles agent --signer "$TIDEMARK_LEDGER/keys/admin.key"
fi

now() { date -u +%Y-%m-%dT%H:%M:%S.000000Z; }
seg=$(printf '00000001000000000000%04X' $((RANDOM % 65536)))
blake=$(printf '%s' "$seg" | sha256sum | cut -c1-64)
sha=$(printf 'x%s' "$seg" | sha256sum | cut -c1-64)
cat <<NDJSON | tm append --signer "$TIDEMARK_LEDGER/keys/agent.key"
{"kind":"pg.wal_archived","body":{"component":"pg:main","timeline":1,"segment":"$seg","size_bytes":16777216,"blake3":"$blake","sha256":"$sha","location":"/archive/$seg"}}
{"kind":"pg.position","body":{"component":"pg:main","lsn":"0/3000028","timeline":1,"observed_at":"$(now)"}}
NDJSON

tm log --limit 20
tm verify
echo "--- latest signed checkpoint (pin it to detect any later rewrite):"
tm checkpoint
echo "--- ledger verifier key:"
tm key show --ledger-key
