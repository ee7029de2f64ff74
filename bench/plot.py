#!/usr/bin/env python3
"""Draws docs/perf-throughput.png from bench/run.sh's results: throughput (MiB/s, median run)
against file size for envseal, age and the AWS Encryption SDK CLI, encrypt and decrypt.

    plot.py RESULTS.jsonl OUT.png
"""
import json
import os
import sys

# bench/timeit.py would shadow the standard library's timeit, which matplotlib's fonts need.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, out = sys.argv[1], sys.argv[2]
points = {}  # (tool, op) -> [(MiB, MiB/s)]
for line in open(results, encoding="utf-8"):
    r = json.loads(line)
    if r["section"] == "sizes":
        op, mib = r["op"].split()[0], int(r["op"].split()[1])
    elif r["section"] == "file" and r["op"] in ("encrypt", "decrypt"):
        op, mib = r["op"], 1024
    else:
        continue
    if r["tool"] not in ("envseal", "age", "esdk") or not r.get("median_s"):
        continue
    points.setdefault((r["tool"], op), []).append((mib, mib / r["median_s"]))

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
names = {"envseal": "envseal", "age": "age", "esdk": "AWS Encryption SDK CLI"}
for ax, op in zip(axes, ("encrypt", "decrypt")):
    for tool in ("envseal", "age", "esdk"):
        pts = sorted(points.get((tool, op), []))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=names[tool])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([1, 16, 128, 1024], ["1 MiB", "16 MiB", "128 MiB", "1 GiB"])
    ax.set_title(op)
    ax.set_xlabel("file size")
    ax.grid(True, which="both", alpha=0.3)
axes[0].set_ylabel("MiB/s (median, whole process)")
axes[1].legend()
fig.suptitle("Throughput by file size (one machine, one run of bench/run.sh; tmpfs)")
fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"wrote {out}")
