#!/usr/bin/env python3
"""Times one command N times; prints a summary line and adds the samples to a JSON-lines file.

    timeit.py --section env --op encrypt --tool envseal --runs 20 --warmup 2 \
        --prep 'cp big.env work/.env' --cwd work -- envseal encrypt .env

Each run:
  1. `--prep` (a shell string, not timed) puts the input back, e.g. a fresh plaintext copy;
  2. the command is started with posix_spawn (stdin /dev/null, stdout to --stdout, default
     /dev/null; stderr kept in a temp file and shown if it fails); its wall time is measured with
     perf_counter from the spawn to its exit.

Peak RSS comes from `/usr/bin/time -f '%e %M'` (%M), never from wait4 here: Linux keeps a process's
high-water RSS across exec, so a child spawned by this Python process reports at least Python's
own ~15 MiB even for `true`; /usr/bin/time is a small C program and does not inflate it that way.
%M is the largest RSS of the command and every descendant it waited for (`sops exec-env`'s child
included). CPU time (user + system) does come from wait4's rusage, for every timed run: unlike
ru_maxrss it is the child's own, and it has microsecond steps where /usr/bin/time has 10 ms. CPU
time above the wall time means more than one core was at work.
Since /usr/bin/time costs ~1 ms a call, the timed runs of a fast command are spawned directly and
`--rss-runs` extra runs (default 2) under /usr/bin/time give its peak RSS. With `--gnu-time`, every
run (timed ones included) goes under /usr/bin/time instead: right for slow commands (large files,
dotenvx), where the extra millisecond is noise and an extra run would be costly. Either way the wall
time is the perf_counter one, which has finer resolution than %e.

Rounds: with --out, a second call for the same section/op/tool adds its samples to the first
one's record, so a caller can interleave tools (envseal, sops, envseal, sops, ...) and a change in
the machine's load hits all of them alike rather than whichever ran during it.

A non-zero exit stops everything with the command's stderr: a benchmark of a failing command is
meaningless. Standard library only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(argv, cwd, stdout_path, gnu_time):
    """Returns (seconds, peak_rss_kib or None unless gnu_time, cpu_seconds)."""
    time_out = None
    if gnu_time:
        fd, time_out = tempfile.mkstemp(prefix="timeit-", suffix=".time")
        os.close(fd)
        argv = ["/usr/bin/time", "-f", "%e %M", "-o", time_out] + argv
    err = tempfile.TemporaryFile()
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
    ]
    old = os.getcwd()
    os.chdir(cwd)  # posix_spawn has no cwd argument; the child inherits ours
    try:
        t0 = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
        _, status, ru = os.wait4(pid, 0)
        dt = time.perf_counter() - t0
    finally:
        os.chdir(old)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err.seek(0)
        sys.stderr.write(err.read().decode(errors="replace")[-4000:])
        sys.exit(f"timeit: `{' '.join(argv)}` exited {code} (in {cwd})")
    cpu = ru.ru_utime + ru.ru_stime  # the child's own (and its waited-for descendants'), in µs steps
    rss = None  # see the module doc: ru.ru_maxrss would include this Python process's RSS
    if time_out:
        with open(time_out) as f:
            fields = f.read().split()  # last line: "%e %M"
        os.unlink(time_out)
        rss = int(fields[-1])
    return dt, rss, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", required=True, help="group in the report, e.g. env, file, huge")
    ap.add_argument("--op", required=True)
    ap.add_argument("--tool", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=0, help="untimed runs first")
    ap.add_argument("--prep", help="shell command before every run (warm-up included), not timed")
    ap.add_argument("--cwd", default=".")
    ap.add_argument("--stdout", default="/dev/null", help="where the command's stdout goes")
    ap.add_argument("--gnu-time", action="store_true", help="run every timed run under /usr/bin/time")
    ap.add_argument("--rss-runs", type=int, default=2, help="extra runs under /usr/bin/time for the "
                    "peak RSS, without --gnu-time")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", help="add the result to this JSON-lines file; a record of the same "
                    "section, op and tool gets these samples added (rounds)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd or a.runs < 1:
        ap.error("need a command after -- and --runs >= 1")

    samples, rss, cpu = [], [], []
    plan = ["warmup"] * a.warmup + ["timed"] * a.runs + ([] if a.gnu_time else ["rss"] * a.rss_runs)
    for kind in plan:
        if a.prep:
            subprocess.run(a.prep, shell=True, check=True, cwd=a.cwd)
        dt, kib, cs = run_once(cmd, a.cwd, a.stdout, a.gnu_time or kind == "rss")
        if kind == "timed":
            samples.append(dt)
            cpu.append(cs)
        if kib is not None and kind != "warmup":
            rss.append(kib)
    rec = {
        "section": a.section, "op": a.op, "tool": a.tool, "runs": a.runs,
        "median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
        "peak_rss_kib": max(rss) if rss else None, "cpu_s": [round(c, 3) for c in cpu], "samples_s": [round(s, 6) for s in samples],
        "cmd": " ".join(cmd), "note": a.note,
    }
    if a.out:
        # Same section/op/tool already in the file (an earlier round): add these samples to it.
        recs = []
        if os.path.exists(a.out):
            with open(a.out) as f:
                recs = [json.loads(l) for l in f if l.strip()]
        key = (a.section, a.op, a.tool)
        old = next((r for r in recs if (r["section"], r["op"], r["tool"]) == key), None)
        if old:
            merged = old["samples_s"] + rec["samples_s"]
            rss_all = [x for x in (old["peak_rss_kib"], rec["peak_rss_kib"]) if x is not None]
            old.update(runs=len(merged), samples_s=merged, cpu_s=old["cpu_s"] + rec["cpu_s"], median_s=statistics.median(merged),
                       min_s=min(merged), max_s=max(merged),
                       peak_rss_kib=max(rss_all) if rss_all else None)
            rec = old
        else:
            recs.append(rec)
        with open(a.out + ".tmp", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        os.replace(a.out + ".tmp", a.out)
    print(f"  {a.section:5} {a.op:28} {a.tool:8} n={rec['runs']:<3} median {rec['median_s']:.4f}s "
          f"min {rec['min_s']:.4f}s  peak RSS "
          + (f"{rec['peak_rss_kib'] / 1024:.1f} MiB" if rec["peak_rss_kib"] else "-"), file=sys.stderr)


if __name__ == "__main__":
    main()
