"""Run the benchmark suite (speed and quality in one report) and write benchmarks/results/REPORT.md.

Each benchmark script writes its own JSON under benchmarks/results/; this script runs them in
order in subprocesses and collects their Markdown tables into one report, so a regression in
either speed or quality shows in one place.

Run: ``python benchmarks/run_all.py [--quick]`` (or ``nox -s bench``). ``--quick`` uses small
sizes (minutes instead of an hour) and writes everything, its report too, to
``benchmarks/results/quick/`` (git-ignored), so it never overwrites the full results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

from _paths import ENV

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

FULL = [
    ("preprocessing", ["preprocessing.py"]),
    ("training", ["training.py"]),
    ("pipeline", ["pipeline.py", "--repeats", "3", "--lazy"]),
    ("gui", ["gui.py"]),
    ("quality", ["quality.py"]),
    ("scale", ["scale.py", "--sizes", "128,256,512,1024"]),
]
QUICK = [
    ("preprocessing", ["preprocessing.py", "--sizes", "256"]),
    ("training", ["training.py", "--quick"]),
    ("pipeline", ["pipeline.py", "--repeats", "1"]),
    ("gui", ["gui.py", "--pixels", "300", "--no-browser"]),
    ("quality", ["quality.py", "--small", "--scenes", "demo30"]),
    ("scale", ["scale.py", "--sizes", "128,256"]),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", help="comma-separated subset, e.g. quality,scale")
    args = p.parse_args()
    plan = QUICK if args.quick else FULL
    if args.only:
        keep = set(args.only.split(","))
        plan = [item for item in plan if item[0] in keep]
    out_dir = RESULTS / "quick" if args.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, ENV: str(out_dir)}
    parts = [
        f"# sigma benchmark report\n\n{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, Python {platform.python_version()}, quick={args.quick}\n"
    ]
    failed = []
    for name, cmd in plan:
        print(f"== {name}", flush=True)
        script = HERE / cmd[0]
        if not script.exists():
            parts.append(f"\n## {name}\n\nnot run: {cmd[0]} is missing\n")
            failed.append(name)
            continue
        proc = subprocess.run(
            [sys.executable, str(script), *cmd[1:]],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        table = "\n".join(line for line in proc.stdout.splitlines() if line.startswith("|"))
        if not table:  # scripts without a Markdown table: their last lines of output
            table = "```\n" + "\n".join(proc.stdout.splitlines()[-15:]) + "\n```"
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        if proc.returncode:
            failed.append(name)
            table += "\n\n```\n" + proc.stderr[-2000:] + "\n```"
        parts.append(f"\n## {name}: {status}\n\n{table}\n")
        print(proc.stdout[-1500:], flush=True)
    (out_dir / "REPORT.md").write_text("".join(parts))
    print(f"report: {out_dir / 'REPORT.md'}")
    if failed:
        raise SystemExit(f"benchmarks failed: {failed}")


if __name__ == "__main__":
    main()
