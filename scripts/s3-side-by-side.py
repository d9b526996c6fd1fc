#!/usr/bin/env python3
"""tidemark against s3-pit-restore (PyPI) on the same bucket and the same T,
one run, against moto_server on loopback. Prints one JSON object: the scan's
rate and request count, each tool's restore time, and whether each restored
bucket equals the ground truth this script keeps.

    .venv/bin/pip install s3-pit-restore
    .venv/bin/python scripts/s3-side-by-side.py [--keys 2000] [--tidemark target/release/tidemark]
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time, datetime

import boto3
from botocore.config import Config

ap = argparse.ArgumentParser()
ap.add_argument("--keys", type=int, default=2000)
ap.add_argument("--tidemark", default="target/release/tidemark")
a = ap.parse_args()
a.tidemark = os.path.abspath(a.tidemark)
venv = os.path.dirname(sys.executable)

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
url = f"http://127.0.0.1:{port}"
moto = subprocess.Popen([os.path.join(venv, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError:
            time.sleep(0.1)
    work = tempfile.mkdtemp(prefix="tidemark-s3-sbs-")
    cfg = os.path.join(work, "aws-config")
    open(cfg, "w").write("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=url, AWS_CONFIG_FILE=cfg)
    os.environ.update(env)
    c = boto3.client("s3", endpoint_url=url, config=Config(s3={"addressing_style": "path"}))
    for b in ["src", "dst-tidemark", "dst-pit"]:
        c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket="src", VersioningConfiguration={"Status": "Enabled"})

    def boundary():
        now = time.time(); nxt = int(now) + 1
        time.sleep(nxt - now + 0.02)
        return datetime.datetime.fromtimestamp(nxt - 0.000001, datetime.timezone.utc)

    truth = {}
    boundary()
    for i in range(a.keys):
        k = f"obj/{i:06d}"; body = f"v1 {i}".encode(); c.put_object(Bucket="src", Key=k, Body=body); truth[k] = body
    T = boundary()
    for i in range(0, a.keys, 2):
        c.put_object(Bucket="src", Key=f"obj/{i:06d}", Body=f"v2 {i}".encode())
    for i in range(1, a.keys, 4):
        c.delete_object(Bucket="src", Key=f"obj/{i:06d}")
    for i in range(a.keys, a.keys + a.keys // 10):
        c.put_object(Bucket="src", Key=f"obj/{i:06d}", Body=b"new")
    boundary(); time.sleep(1.2)

    led = os.path.join(work, "ledger")
    tm = lambda *args, **kw: subprocess.run([a.tidemark, "--ledger", led, *args], env=env, check=True,
                                           capture_output=True, text=True, cwd=work, **kw).stdout
    tm("init", "--origin", "sbs.test/ledger")
    for name, role in [("agent", "agent"), ("operator", "operator")]:
        tm("key", "new", "--name", name, "--out", f"{name}.key")
        tm("key", "enroll", "--pub", f"{name}.key.pub", "--roles", role, "--signer", os.path.join(led, "keys/admin.key"))
    common = ["--component", "s3:src", "--endpoint", url, "--bucket", "src", "--path-style"]
    tm("s3", "register", *common, "--signer", os.path.join(led, "keys/admin.key"))
    t0 = time.time(); out = tm("s3", "scan", *common, "--signer", "agent.key"); scan_s = time.time() - t0
    t_iso = T.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    t0 = time.time()
    tm("s3", "restore", *common, "--at", t_iso, "--target-bucket", "dst-tidemark", "--signer", "operator.key")
    tidemark_s = time.time() - t0
    t0 = time.time()
    pit = subprocess.run([os.path.join(venv, "s3-pit-restore"), "-b", "src", "-B", "dst-pit", "-t", T.isoformat()],
                         env=env, capture_output=True, text=True)
    pit_s = time.time() - t0

    def matches(bucket):
        got = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                got[o["Key"]] = c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        wrong = sum(1 for k in truth if got.get(k) != truth[k]) + sum(1 for k in got if k not in truth)
        return wrong

    versions = a.keys + a.keys // 2 + len(range(1, a.keys, 4)) + a.keys // 10
    print(json.dumps({
        "keys_at_T": len(truth), "versions_and_markers": versions,
        "tidemark_scan": out.strip(), "tidemark_scan_s": round(scan_s, 3),
        "tidemark_restore_s": round(tidemark_s, 3), "tidemark_wrong_keys": matches("dst-tidemark"),
        "s3_pit_restore_s": round(pit_s, 3), "s3_pit_restore_exit": pit.returncode,
        "s3_pit_restore_wrong_keys": matches("dst-pit"), "s3_pit_restore_stderr_tail": pit.stderr[-300:],
    }, indent=1))
finally:
    moto.kill()
