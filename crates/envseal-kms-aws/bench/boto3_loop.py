#!/usr/bin/env python3
"""GenerateDataKey + Decrypt round trips with boto3: the same loop as examples/latency.rs.

Same environment: AWS_ENDPOINT_URL (botocore >= 1.31 reads it), credentials, AWS_REGION /
AWS_DEFAULT_REGION, ENVSEAL_BENCH_KEY (default: create a key), ENVSEAL_BENCH_N (500),
ENVSEAL_BENCH_CONCURRENCY (8 threads sharing one client; boto3 clients are thread-safe).
"""
import math
import os
import threading
import time

import boto3
from botocore.config import Config

N = max(1, int(os.environ.get("ENVSEAL_BENCH_N", "500")))
TASKS = max(1, int(os.environ.get("ENVSEAL_BENCH_CONCURRENCY", "8")))
CTX = {"purpose": "latency", "tenant": "t-1"}

# Enough pooled connections for every thread, and the same retry bound as envseal.
kms = boto3.client(
    "kms",
    config=Config(max_pool_connections=max(10, TASKS), retries={"mode": "standard", "max_attempts": 4}),
)
key = os.environ.get("ENVSEAL_BENCH_KEY") or kms.create_key()["KeyMetadata"]["Arn"]


def round_trip():
    t = time.perf_counter()
    g = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=CTX)
    d = kms.decrypt(KeyId=g["KeyId"], CiphertextBlob=g["CiphertextBlob"], EncryptionContext=CTX)
    assert d["Plaintext"] == g["Plaintext"]
    return time.perf_counter() - t


def report(phase, lat, wall):
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, max(0, math.ceil(len(lat) * p) - 1))]

    print(
        f"{phase:<28} n={len(lat):<5} {len(lat) / wall:>8.1f} round trips/s   "
        f"p50 {pct(0.50) * 1e3:>7.2f} ms   p99 {pct(0.99) * 1e3:>7.2f} ms"
    )


def main():
    import botocore

    print(f"boto3 {boto3.__version__} / botocore {botocore.__version__}")
    for _ in range(20):
        round_trip()

    t = time.perf_counter()
    lat = [round_trip() for _ in range(N)]
    report("sequential", lat, time.perf_counter() - t)

    results = []
    lock = threading.Lock()

    def worker(share):
        mine = [round_trip() for _ in range(share)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker, args=(N // TASKS + (i < N % TASKS),)) for i in range(TASKS)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    report(f"{TASKS} concurrent threads", results, time.perf_counter() - t)


if __name__ == "__main__":
    main()
