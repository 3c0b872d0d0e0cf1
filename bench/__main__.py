"""``python -m bench [--quick] [--only parse,calls,...]``: run the benchmarks, print one table.

Each benchmark module runs in a child process of its own (``python -m bench --child
<module>``), which prints its rows as JSON on the last line of stdout; this process only
collects and prints. Output files (SIPp statistics, logs) go to a temporary directory that
is removed afterwards unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import MODULES, Row, child_env, fmt_number, loadavg

REPO = Path(__file__).resolve().parent.parent
JSON_MARK = "BENCH-ROWS "


def _child(module: str, quick: bool, workdir: str, options: dict) -> int:
    import importlib

    mod = importlib.import_module(f"bench.{module}")
    rows = mod.run(quick=quick, workdir=workdir, options=options) \
        if "options" in mod.run.__code__.co_varnames else mod.run(quick=quick, workdir=workdir)
    print(JSON_MARK + json.dumps([r.to_json() for r in rows]), flush=True)
    return 0


def run_module(module: str, quick: bool, workdir: str, options: dict) -> list[Row]:
    env = child_env()
    cmd = [sys.executable, "-m", "bench", "--child", module, "--workdir", workdir,
           "--options", json.dumps(options)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(JSON_MARK):
            return [Row.from_json(d) for d in json.loads(line[len(JSON_MARK):])]
    return [Row(f"{module}: benchmark failed", None, "", skipped=f"exit {proc.returncode}; "
                f"output: {proc.stdout[-500:]!r}")]


def table(rows: list[Row]) -> str:
    header = ("figure", "measured", "reference (same run)", "ratio", "target", "met?")
    lines = []
    for r in rows:
        measured = "skipped" if r.skipped else f"{fmt_number(r.measured)} {r.unit}"
        if r.reference is not None:
            reference = f"{fmt_number(r.reference)} {r.unit} ({r.reference_label})"
        else:
            reference = r.reference_label or "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[r.met] if not r.skipped else "skipped"
        lines.append((r.figure, measured, reference, ratio, r.target, met))
    widths = [max(len(str(x[i])) for x in [header] + lines) for i in range(len(header))]

    def fmt(cells: tuple) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(line) for line in lines]
    return "\n".join(out)


def machine() -> str:
    return (f"{platform.system()} {platform.release()} {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()} "
            f"({platform.python_implementation()})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: proves every benchmark works (CI)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(MODULES)}")
    parser.add_argument("--rates", default="",
                        help="SIPp call rates to step through, e.g. 500,1000,2000")
    parser.add_argument("--seconds", type=float, default=0,
                        help="seconds per SIPp step / calls measurement window")
    parser.add_argument("--sipp-peer", choices=("runner", "twistd"), default="runner",
                        help="what SIPp calls: the bench runner (default) or the shipped "
                             "`twistd -n sipinstances`")
    parser.add_argument("--clean-rate", type=int, default=0,
                        help="overload: the clean rate; SIPp offers twice it (default 3000)")
    parser.add_argument("--compare-raw", action="store_true",
                        help="overload: also run with --no-overload-control, same minute")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary output directory and print its path")
    parser.add_argument("--json", default="", help="also write the rows as JSON here")
    parser.add_argument("--twsip", default="", metavar="DIR",
                        help="measure the twsip package in DIR instead of this checkout's "
                             "(e.g. an older version: git archive REV twsip | tar -x -C DIR)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        return _child(args.child, args.quick, args.workdir, json.loads(args.options))

    modules = [m.strip() for m in args.only.split(",") if m.strip()] or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    options: dict = {}
    if args.rates:
        options["rates"] = [int(r) for r in args.rates.split(",")]
    if args.seconds:
        options["seconds"] = args.seconds
    options["peer"] = args.sipp_peer
    if args.clean_rate:
        options["clean_rate"] = args.clean_rate
    options["compare_raw"] = args.compare_raw

    if args.twsip:
        if not os.path.isdir(os.path.join(args.twsip, "twsip")):
            parser.error(f"no twsip package in {args.twsip}")
        os.environ["BENCH_TWSIP_PATH"] = os.path.abspath(args.twsip)
    workdir = tempfile.mkdtemp(prefix="twsip-bench-")
    print(f"twsip benchmarks{' (--quick)' if args.quick else ''}: {machine()}", flush=True)
    if args.twsip:
        print(f"measuring the twsip package in {os.environ['BENCH_TWSIP_PATH']}", flush=True)
    print(f"load average at start: {loadavg()}", flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    try:
        for module in modules:
            print(f"running {module} ...", file=sys.stderr, flush=True)
            rows += run_module(module, args.quick, workdir, options)
    finally:
        if args.keep:
            print(f"output kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average at end: {loadavg()}; took {time.monotonic() - started:.0f} s")
    print()
    print(table(rows))
    notes = [(r.figure, n) for r in rows for n in ([r.skipped] if r.skipped else []) + r.notes]
    if notes:
        print()
        for figure, note in notes:
            print(f"- {figure}: {note}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_json() for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
