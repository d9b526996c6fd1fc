#!/usr/bin/env python3
"""An independent verifier of tidemark exports, written from docs/formats.md.

Uses only the standard library (hashlib, json, base64) and `cryptography`
(Ed25519). It checks what an auditor's own tool would: the checkpoint's
C2SP signed-note signature and key id, every entry's canonical form and
Ed25519 signature, and every C2SP tlog-proof against the checkpoint (RFC
6962 inclusion, transparency-dev's algorithm re-implemented here). It does
not check the blake3 MANIFEST (blake3 is not in hashlib).

Usage: verify_export.py EXPORT_DIR|EXPORT.tar VKEY    (exit 0 when everything holds)

A tar is read by the rules of docs/formats.md §9: members are the directory
`export/` and files under it, regular files and directories only, plain
relative names, each path once; anything else is refused before reading.
"""
import base64
import hashlib
import json
import os
import sys
import tarfile
import tempfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def parse_vkey(vkey):
    name, key_id, key = vkey.strip().split("+", 2)
    raw = base64.b64decode(key)
    if raw[0] != 1 or len(raw) != 33:
        fail("vkey is not Ed25519")
    computed = hashlib.sha256(name.encode() + b"\n\x01" + raw[1:]).digest()[:4]
    if computed.hex() != key_id:
        fail("vkey key id does not match its key")
    return name, computed, Ed25519PublicKey.from_public_bytes(raw[1:])


def open_note(note, name, key_id, pub):
    split = note.rindex("\n\n")
    body, sigs = note[: split + 1], note[split + 2 :]
    for line in sigs.rstrip("\n").split("\n"):
        if not line.startswith("\u2014 "):
            fail("bad signature line")
        signer, sig = line[2:].split(" ", 1)
        raw = base64.b64decode(sig)
        if signer == name and raw[:4] == key_id:
            try:
                pub.verify(raw[4:], body.encode())
            except InvalidSignature:
                fail("checkpoint signature does not verify")
            return body
    fail("no signature by the ledger key")


def verifies(public_key_b64, signature, message):
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64)).verify(signature, message)
        return True
    except InvalidSignature:
        return False


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index, size, leaf, proof):
    if index >= size:
        fail("index beyond size")
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    if len(proof) != inner + border:
        fail("wrong proof length")
    h = leaf
    for i, p in enumerate(proof[:inner]):
        h = node_hash(h, p) if (index >> i) & 1 == 0 else node_hash(p, h)
    for p in proof[inner:]:
        h = node_hash(p, h)
    return h


def unpack_tar(path, into):
    """Unpacks an export tar into `into` and returns the export directory, refusing what §9 forbids."""
    seen = set()
    with tarfile.open(path, "r:") as tar:
        for m in tar.getmembers():
            parts = m.name.rstrip("/").split("/")
            if parts[0] != "export" or any(p in ("", ".", "..") for p in parts) or m.name.startswith("/"):
                fail(f"tar member {m.name!r} is not a plain path under export/")
            if not (m.isfile() or m.isdir()):
                fail(f"tar member {m.name!r} is neither a regular file nor a directory")
            key = "/".join(parts)
            if key in seen:
                fail(f"tar member {m.name!r} appears twice")
            seen.add(key)
            target = os.path.join(into, *parts)
            if m.isdir():
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as dst:
                    dst.write(src.read())
    return os.path.join(into, "export")


def main():
    directory, vkey = sys.argv[1], sys.argv[2]
    if os.path.isfile(directory):
        directory = unpack_tar(directory, tempfile.mkdtemp(prefix="verify-export-"))
    name, key_id, ledger_pub = parse_vkey(vkey)
    note = open(os.path.join(directory, "checkpoint.txt"), encoding="utf-8").read()
    origin, size, root = open_note(note, name, key_id, ledger_pub).rstrip("\n").split("\n")
    size, root = int(size), base64.b64decode(root)
    if origin != name:
        fail("checkpoint origin is not the key name")
    # Actor ids are blake3(public key)[:16] and hashlib has no blake3, so a
    # signature is accepted when one key enrolled before the entry verifies it
    # (the actor id is inside the signed bytes, so it cannot be swapped).
    enrolled = []
    checked = 0
    for fname in sorted(os.listdir(os.path.join(directory, "entries"))):
        data = open(os.path.join(directory, "entries", fname), "rb").read()
        entry = json.loads(data)
        if canonical(entry) != data:
            fail(f"{fname} is not canonical JSON")
        event, seq = entry["event"], entry["seq"]
        body = event["body"]
        if event["kind"] == "ledger.genesis":
            enrolled.append(body["admin_public_key"])
        message = b"tidemark-event-v1\n" + canonical(event)
        signature = base64.b64decode(entry["sig"])
        if not any(verifies(k, signature, message) for k in enrolled):
            fail(f"{fname}: no key enrolled before entry {seq} verifies its signature")
        if event["kind"] == "key.enrolled":
            enrolled.append(body["public_key"])
        proof_text = open(os.path.join(directory, "proofs", fname.replace(".json", ".tlog-proof")), encoding="utf-8").read()
        head, proof_note = proof_text.split("\n\n", 1)
        lines = head.split("\n")
        if lines[0] != "c2sp.org/tlog-proof@v1" or lines[1] != f"index {seq}":
            fail(f"{fname}: malformed tlog-proof")
        if proof_note != note:
            fail(f"{fname}: proof is into another checkpoint")
        hashes = [base64.b64decode(h) for h in lines[2:]]
        if root_from_inclusion(seq, size, leaf_hash(data), hashes) != root:
            fail(f"{fname}: not included in the checkpoint")
        checked += 1
    print(f"OK: {checked} entries signed and included in checkpoint {origin} size {size}")


if __name__ == "__main__":
    main()
