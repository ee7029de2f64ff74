#!/usr/bin/env python3
"""Peer baselines for KMS round trips (one GenerateDataKey + one Decrypt of its result), printed in
the same shape as envseal's latency examples:

    kms_loops.py boto3 N        # boto3 against AWS_ENDPOINT_URL (moto), a fresh key
    kms_loops.py transit N      # raw HTTP/1.1 keep-alive against VAULT_ADDR (OpenBao Transit)

Sequential only: one client, one connection.
"""
import base64
import http.client
import json
import os
import sys
import time
import urllib.parse


def report(label, lat, wall):
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, max(0, int(len(lat) * q + 0.999) - 1))]
    print(f"{label:<28} n={len(lat):<5} {len(lat) / wall:>8.1f} round trips/s   p50 {p(0.5) * 1e3:>7.2f} ms   p99 {p(0.99) * 1e3:>7.2f} ms")


def boto3_loop(n):
    import boto3

    kms = boto3.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    ctx = {"purpose": "latency", "tenant": "t-1"}
    lat, start = [], time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        g = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=ctx)
        d = kms.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext=ctx)
        assert d["Plaintext"] == g["Plaintext"]
        lat.append(time.perf_counter() - t)
    report("boto3 sequential", lat, time.perf_counter() - start)


def transit_loop(n):
    addr = urllib.parse.urlparse(os.environ["VAULT_ADDR"])
    token = os.environ.get("VAULT_TOKEN") or os.environ["BAO_TOKEN"]
    conn = http.client.HTTPConnection(addr.hostname, addr.port)
    headers = {"X-Vault-Token": token, "Content-Type": "application/json"}

    def call(method, path, body=None):
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        data = r.read()
        assert r.status in (200, 204), (r.status, data[:200])
        return json.loads(data) if data else {}

    key = f"bench-{os.getpid()}"
    call("POST", f"/v1/transit/keys/{key}", {"type": "aes256-gcm96", "derived": True})
    ctx = base64.b64encode(b"purpose=latency;tenant=t-1").decode()
    lat, start = [], time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        g = call("POST", f"/v1/transit/datakey/plaintext/{key}", {"context": ctx})["data"]
        d = call("POST", f"/v1/transit/decrypt/{key}", {"ciphertext": g["ciphertext"], "context": ctx})["data"]
        assert d["plaintext"] == g["plaintext"]
        lat.append(time.perf_counter() - t)
    report("HTTP keep-alive sequential", lat, time.perf_counter() - start)


if __name__ == "__main__":
    {"boto3": boto3_loop, "transit": transit_loop}[sys.argv[1]](int(sys.argv[2]))
