#!/usr/bin/env python3
"""Turns bench/run.sh's results into one table: printed, and written as Markdown.

    report.py table --results R.jsonl --versions V.txt --notes N.txt --setting K=V... --markdown OUT.md
    report.py compare-env REF OTHER    # `env -0` dumps: how many KEY_* values differ (names only)

Ratios use the medians, with the ratio of the minimums in brackets (the least disturbed runs: on
a busy machine the minimum is often the better estimate of what the tool itself costs). "CPU s" is
the median user + system CPU time of the timed runs: above the wall time means more than one core
at work.
Standard library only.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys

SECTIONS = {
    "env": ".env, 1000 values",
    "file": "1 GiB random file (tmpfs)",
    "huge": "10 GiB sparse file (pipe)",
    "sizes": "throughput by file size (tmpfs; docs/perf-throughput.png)",
}

# (section, op, tool) -> (numerator tool, denominator tool, ratio label, target text, check)
# A ratio row compares this row's tool with another tool's row of the same section and op (or of
# `denominator op` for the file copy baseline).
ENV_OPS = ("encrypt", "decrypt", "run")


def ratio_spec(section, op, tool):
    if section == "env" and (op in ENV_OPS or op == "encrypt to stdout"):
        if tool == "envseal" and op == "encrypt to stdout":
            return ("envseal", op, "sops", "encrypt", "envseal/sops", None, None)
        if tool == "envseal":
            return ("envseal", op, "sops", op, "envseal/sops", "<= 0.5", lambda r: r <= 0.5)
        if tool == "dotenvx":
            return ("dotenvx", op, "envseal", op, "dotenvx/envseal", ">= 100", lambda r: r >= 100)
    if section == "file" and op in ("encrypt", "decrypt"):
        if tool == "envseal":
            return ("envseal", op, "cp", "copy", "envseal/cp", "<= 1.2", lambda r: r <= 1.2)
        if tool == "age":
            return ("age", op, "cp", "copy", "age/cp", None, None)
        if tool == "esdk":
            return ("esdk", op, "envseal", op, "esdk/envseal", None, None)
    return None


def fmt_s(x):
    if x is None:
        return "-"
    return f"{x:.4f}" if x < 10 else f"{x:.2f}"


def fmt_ratio(r):
    return f"{r:.0f}" if r >= 100 else f"{r:.3g}"


def median_or_none(xs):
    return statistics.median(xs) if xs else None


def fmt_mib(kib):
    return "-" if kib is None else f"{kib / 1024:.1f}"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


SECTION_ORDER = list(SECTIONS)
OP_ORDER = ["copy", "encrypt", "encrypt to stdout", "decrypt", "run"]
TOOL_ORDER = ["cp", "envseal", "sops", "dotenvx", "age"]


def order(r):
    def pos(seq, x):
        return seq.index(x) if x in seq else len(seq)
    return (pos(SECTION_ORDER, r["section"]), pos(OP_ORDER, r["op"]), pos(TOOL_ORDER, r["tool"]))


def build_rows(results):
    results = sorted(results, key=order)
    idx = {(r["section"], r["op"], r["tool"]): r for r in results}
    rows, verdicts = [], []
    for r in results:
        spec = ratio_spec(r["section"], r["op"], r["tool"])
        ratio_txt, target_txt, met = "", "", ""
        if spec:
            num_tool, num_op, den_tool, den_op, label, target, check = spec
            den = idx.get((r["section"], den_op, den_tool))
            if den:
                med = r["median_s"] / den["median_s"]
                mn = r["min_s"] / den["min_s"]
                ratio_txt = f"{label} {fmt_ratio(med)} [{fmt_ratio(mn)}]"
                if target:
                    target_txt = f"{label} {target}"
                    ok = check(med)
                    met = "yes" if ok else ("min only" if check(mn) else "NO")
                    verdicts.append((f"{SECTIONS[r['section']]} {r['op']}: {label} {target}", met))
        if r["section"] == "file" and r["tool"] == "envseal" and r["op"] in ("encrypt", "decrypt"):
            rss_ok = r["peak_rss_kib"] is not None and r["peak_rss_kib"] <= 32 * 1024
            target_txt = (target_txt + "; " if target_txt else "") + "RSS <= 32 MiB"
            met = (met + "; " if met else "") + ("yes" if rss_ok else "NO")
            verdicts.append((f"{SECTIONS['file']} {r['op']}: envseal peak RSS <= 32 MiB",
                             "yes" if rss_ok else "NO"))
        tool = r["tool"] + (" *" if r.get("note") else "")
        rows.append([SECTIONS.get(r["section"], r["section"]) + ": " + r["op"], tool, str(r["runs"]),
                     fmt_s(r["median_s"]), fmt_s(r["min_s"]), fmt_s(median_or_none(r.get("cpu_s"))),
                     fmt_mib(r["peak_rss_kib"]),
                     ratio_txt, target_txt, met])
    return rows, verdicts


HEAD = ["operation", "tool", "runs", "median s", "min s", "CPU s", "peak RSS MiB",
        "ratio: median [min]", "target", "met"]


def text_table(rows):
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEAD)]
    right = {2, 3, 4, 5, 6}
    def line(cells):
        return "  ".join(c.rjust(w[i]) if i in right else c.ljust(w[i]) for i, c in enumerate(cells)).rstrip()
    out = [line(HEAD), line(["-" * x for x in w])]
    prev = None
    for r in rows:
        sec = r[0].split(":")[0]
        if prev is not None and sec != prev:
            out.append("")
        prev = sec
        out.append(line(r))
    return "\n".join(out)


def md_table(rows):
    out = ["| " + " | ".join(HEAD) + " |", "|" + "|".join(["---", "---", "--:", "--:", "--:", "--:", "--:", "---", "---", "---"]) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") or " " for c in r) + " |")
    return "\n".join(out)


def cmd_table(a):
    with open(a.results) as f:
        results = [json.loads(l) for l in f if l.strip()]
    versions = open(a.versions).read().strip().splitlines() if a.versions else []
    notes = open(a.notes).read().strip().splitlines() if a.notes and os.path.exists(a.notes) else []
    settings = dict(s.split("=", 1) for s in a.setting)
    rows, verdicts = build_rows(results)

    table = text_table(rows)
    print(table)
    if verdicts:
        print()
        for what, met in verdicts:
            print(f"  target {met:8} {what}")
    starred = [r for r in results if r.get("note")]
    for r in starred:
        print(f"  * {r['tool']} {r['op']}: {r['note']}")
    for n in notes:
        print(f"  note: {n}")

    if not a.markdown:
        return
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [
        "# envseal vs peers: latest run",
        "",
        f"Written by `bench/run.sh` on {now}. **Measured on a shared, busy 2-core machine**: other "
        "jobs were running, so the figures are noisy; the minimum is the least disturbed run.",
        "",
        "## Machine",
        "",
        f"- date: {now}",
        f"- nproc: {os.cpu_count()}",
        f"- CPU: {cpu_model()}",
        f"- memory: {mem_total()}",
        f"- kernel: {platform.release()}",
    ]
    for k, v in settings.items():
        md.append(f"- {k}: {v}")
    md += ["", "## Tool versions", ""] + [f"- {v}" for v in versions]
    md += ["", "## Results", "", md_table(rows), ""]
    if verdicts:
        md += ["Targets (on the medians; `min only` = met by the minimums but not the medians):", ""]
        md += [f"- {met}: {what}" for what, met in verdicts]
        md.append("")
    if starred or notes:
        md += ["## Notes", ""]
        md += [f"- \\* {r['tool']} {r['op']}: {r['note']}" for r in starred]
        md += [f"- {n}" for n in notes]
        md.append("")
    md += ["## Commands", "", "| operation | tool | command |", "|---|---|---|"]
    for r in sorted(results, key=order):
        argv0, _, rest = r["cmd"].partition(" ")
        cmd = (os.path.basename(argv0) + " " + rest).strip()  # envseal/sops/... by name, not path
        md.append(f"| {SECTIONS.get(r['section'], r['section'])}: {r['op']} | {r['tool']} | "
                  f"`{cmd.replace('|', chr(92) + '|')}` |")
    md.append("")
    os.makedirs(os.path.dirname(os.path.abspath(a.markdown)), exist_ok=True)
    with open(a.markdown, "w") as f:
        f.write("\n".join(md))


def read_env0(path, prefix="KEY_"):
    """The KEY_* variables of an `env -0` dump."""
    out = {}
    with open(path, "rb") as f:
        for item in f.read().split(b"\0"):
            name, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep and name.startswith(prefix):
                out[name] = value
    return out


def cmd_compare_env(a):
    ref = read_env0(a.ref)
    other = read_env0(a.other)
    keys = sorted(set(ref) | set(other), key=lambda k: (len(k), k))
    missing = [k for k in keys if k not in other]
    extra = [k for k in keys if k not in ref]
    differ = [k for k in keys if k in ref and k in other and ref[k] != other[k]]
    parts = [f"{len(other)} variables set"]
    if differ:
        parts.append(f"{len(differ)} of {len(ref)} values differ from envseal's reading "
                     f"(e.g. {', '.join(differ[:3])})")
    else:
        parts.append(f"all {len(ref)} values equal envseal's reading")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if extra:
        parts.append(f"{len(extra)} extra")
    print("; ".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("--results", required=True)
    t.add_argument("--versions")
    t.add_argument("--notes")
    t.add_argument("--setting", action="append", default=[], help="K=V shown under Machine")
    t.add_argument("--markdown")
    c = sub.add_parser("compare-env")
    c.add_argument("ref")
    c.add_argument("other")
    a = ap.parse_args()
    {"table": cmd_table, "compare-env": cmd_compare_env}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
