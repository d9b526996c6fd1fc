#!/bin/bash
# Usage (as root, after `cargo build --release` and scripts/test.sh made .venv): DURATION=600 scripts/bench-agent.sh
# Prints the agent process's CPU seconds and memory over DURATION s with positions every 1 s, scans every 2 s,
# marks every 5 s and archive checks every 20 s (PostgreSQL 15 + moto + tidemark serve on loopback), then the
# time from pg_switch_wal() to /metrics counting the new segment, five times. Figures: docs/performance.md.
# Measures the agent's own CPU and memory over DURATION seconds with short schedules,
# and the time from a WAL segment archived to /metrics counting it.
set -euo pipefail
DURATION=${DURATION:-600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$ROOT/target/release/tidemark
B=/tmp/tidemark-agentbench
PGBIN=/usr/lib/postgresql/15/bin
pkill -f "tidemark-agentbench" 2>/dev/null || true
pkill -f "moto_server -H 127.0.0.1 -p 5599" 2>/dev/null || true
sleep 1
rm -rf $B && mkdir -p $B && chmod 755 $B
$T init --ledger $B/ledger --quiet >/dev/null
ADMIN=$B/ledger/keys/admin.key
$T key new --name agent --out $B/agent.key >/dev/null
$T key enroll --ledger $B/ledger --pub $B/agent.key.pub --roles agent --signer $ADMIN >/dev/null
$T serve --ledger $B/ledger --listen 127.0.0.1:7599 > $B/serve.log 2>&1 &
SERVE=$!
sleep 2
URL=http://127.0.0.1:7599
TOKEN=$($T token issue --key $B/agent.key --ledger $URL | tr -d '\n')
$ROOT/.venv/bin/moto_server -H 127.0.0.1 -p 5599 > $B/moto.log 2>&1 &
MOTO=$!
sleep 3
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
$ROOT/.venv/bin/python - <<'PY'
import boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:5599", region_name="us-east-1")
s3.create_bucket(Bucket="uploads")
s3.put_bucket_versioning(Bucket="uploads", VersioningConfiguration={"Status": "Enabled"})
for i in range(20):
    s3.put_object(Bucket="uploads", Key=f"k{i}", Body=b"x" * 100)
PY
mkdir -p $B/archive $B/spool && cp $B/agent.key $B/pgagent.key && chown -R postgres: $B/archive $B/spool $B/pgagent.key
mkdir -p $B/pg && chown postgres: $B/pg && chmod 700 $B/pg
su postgres -c "$PGBIN/initdb -D $B/pg -A trust -U postgres >/dev/null"
cat >> $B/pg/postgresql.conf <<CONF
port = 5499
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
archive_mode = on
archive_command = '$ROOT/examples/pg-archive.sh %p %f'
archive_timeout = 1
CONF
su postgres -c "env TIDEMARK_ARCHIVE_DIR=$B/archive TIDEMARK_CLUSTER=main TIDEMARK_LEDGER=$URL TIDEMARK_SPOOL=$B/spool TIDEMARK_SIGNER=$B/pgagent.key TIDEMARK_BIN=$T TIDEMARK_TOKEN=$TOKEN $PGBIN/pg_ctl -D $B/pg -l $B/pg/startup.log start >/dev/null"
sleep 2
DSN="host=127.0.0.1 port=5499 user=postgres dbname=postgres"
export TIDEMARK_LEDGER=$URL TIDEMARK_TOKEN=$TOKEN
$T pg register --cluster main --dsn "$DSN" --signer $ADMIN >/dev/null
$T s3 register --component s3:uploads --endpoint http://127.0.0.1:5599 --bucket uploads --path-style --signer $ADMIN >/dev/null
$T group define app --component pg:main --component s3:uploads --max-skew 1s --signer $ADMIN >/dev/null
cat > $B/tidemark.toml <<TOML
[ledger]
url = "$URL"
token = "$TOKEN"
[keys]
agent = "$B/agent.key"
[group]
name = "app"
[[postgresql]]
component = "pg:main"
dsn = "$DSN"
[[s3]]
component = "s3:uploads"
endpoint = "http://127.0.0.1:5599"
path_style = true
[schedule]
positions = "1s"
scans = "2s"
marks = "5s"
archive_checks = "20s"
TOML
$T agent --config $B/tidemark.toml --json --metrics-file $B/agent.prom 2> $B/agent.log &
AGENT=$!
CLK=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
sleep 5
C0=$(cpu $AGENT); T0=$(date +%s.%N)
sleep $DURATION
C1=$(cpu $AGENT); T1=$(date +%s.%N)
HWM=$(grep VmHWM /proc/$AGENT/status | awk '{print $2}')
RSS=$(grep VmRSS /proc/$AGENT/status | awk '{print $2}')
echo "agent over $(echo "$T1 - $T0" | bc) s: cpu $(echo "scale=2; ($C1 - $C0) / $CLK" | bc) s, VmRSS $RSS KiB, VmHWM $HWM KiB"
# Archive -> metric latency: a new segment, then poll /metrics until it counts it.
seg() { curl -s -H "authorization: Bearer $TOKEN" $URL/metrics | awk '/^tidemark_pg_segments_recorded\{/{print $2}'; }
for i in 1 2 3 4 5; do
  N0=$(seg)
  S=$(date +%s.%N)
  su postgres -c "$PGBIN/psql -h 127.0.0.1 -p 5499 -U postgres -qAt -c 'CREATE TABLE IF NOT EXISTS t(i int); INSERT INTO t VALUES (1); SELECT pg_switch_wal();' >/dev/null"
  while [ "$(seg)" = "$N0" ]; do sleep 0.01; done
  E=$(date +%s.%N)
  echo "switch -> metric $(echo "($E - $S) * 1000" | bc) ms"
done
grep -c '"event":"ok"' $B/agent.log | sed 's/^/ok runs: /'
grep -c '"event":"failed"\|"event":"gave_up"' $B/agent.log | sed 's/^/failed runs: /' || true
kill -TERM $AGENT; wait $AGENT || true
su postgres -c "$PGBIN/pg_ctl -D $B/pg stop -m fast >/dev/null" || true
kill $SERVE $MOTO || true
