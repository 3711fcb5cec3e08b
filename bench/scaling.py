"""The scaling curve: time and peak memory of a fresh-process fit from 100 to 10,000 estimates.

For each size, ``bench/synthetic.py`` writes an evidence base (projects = estimates / 10,
domains = min(10, projects / 5), seed 1) to a temporary folder, and a fresh wrapper
process times ``metaeval fit --csv FILE --out TMP --refit --format json``
(default model and sampler settings, the machine's compile cache as it is) and reads
the child's peak resident memory from ``getrusage(RUSAGE_CHILDREN)``. The diagnostics
(min bulk/tail ESS, max R-hat, divergences, gate) come from the summary the fit prints.
A child still running after 600 s is killed and recorded as a timeout.

Writes ``bench/results/scaling-<model>-<date>.json``, ``bench/scaling-<model>.md`` (table
and a short reading) and ``bench/scaling-<model>.png`` (log-log time and memory against
estimates). ``--model marginal`` measures the model with the effects integrated out.
``--render FILE`` redraws the table and figure from a results file without fitting
(a ``notes`` list added to that file by hand is printed under the reading); the same
results give byte-identical files.

Run:  .venv/bin/python bench/scaling.py [--model default|marginal] [--sizes 100 300 1000 3000 10000] [--runs 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from synthetic import write_csv

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIZES = (100, 300, 1000, 3000, 10000)
TIMEOUT_S = 600
#: The target for 10,000 estimates, 1,000 projects and 10 domains.
TARGET = dict(estimates=10000, seconds=30.0, ess_min=400, divergences=0, peak_rss_mb=2048.0)

#: Runs in a fresh process, so RUSAGE_CHILDREN sees only the fit.
MEASURE = """
import json, resource, subprocess, sys, time
cmd, stdout, stderr, timeout = json.loads(sys.argv[1])
start = time.perf_counter()
with open(stdout, "wb") as out, open(stderr, "wb") as err:
    try:
        returncode, timed_out = subprocess.run(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, timeout=timeout).returncode, False
    except subprocess.TimeoutExpired:
        returncode, timed_out = None, True
seconds = time.perf_counter() - start
print(json.dumps(dict(seconds=seconds, peak_rss_kb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                      returncode=returncode, timed_out=timed_out)))
"""
DIAGNOSTICS = ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "passed", "failures")


def grid(n_estimates: int) -> tuple[int, int]:
    """(projects, domains) for a size: ten estimates a project, at least five projects a domain, at most ten domains."""
    projects = max(1, n_estimates // 10)
    return projects, min(10, max(1, projects // 5))


def measure_fit(csv: Path, work: Path, *, model: str = "default", timeout: float = TIMEOUT_S) -> dict:
    """Time one fresh-process `metaeval fit --csv --refit` and read its peak memory and diagnostics.

    The fit's output folder and its captured stdout and stderr go under ``work``.
    ``status`` is ok, gate failed, error (no summary printed; ``error`` holds the last
    stderr line) or timeout.
    """
    work.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "metaeval"), "fit", "--csv", str(csv), "--out", str(work / "out"), "--model", model, "--refit", "--format", "json"]
    stdout, stderr = work / "stdout.json", work / "stderr.txt"
    wrapper = subprocess.run([sys.executable, "-c", MEASURE, json.dumps([cmd, str(stdout), str(stderr), timeout])],
                             check=True, capture_output=True, text=True, cwd=ROOT)
    run = json.loads(wrapper.stdout)
    result = dict(seconds=round(run["seconds"], 3), peak_rss_mb=round(run["peak_rss_kb"] / 1024, 1),
                  returncode=run["returncode"], timed_out=run["timed_out"], **dict.fromkeys(DIAGNOSTICS), error=None)
    try:
        diagnostics = json.loads(stdout.read_text(encoding="utf-8"))["diagnostics"]
        result.update({k: diagnostics.get(k) for k in DIAGNOSTICS})
    except (OSError, ValueError, KeyError, TypeError):
        lines = stderr.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        result["error"] = (f"killed after {timeout:g} s" if run["timed_out"] else lines[-1] if lines
                           else f"no output (exit status {run['returncode']})")
    result["status"] = ("timeout" if run["timed_out"] else "error" if result["passed"] is None
                        else "ok" if result["passed"] else "gate failed")
    return result


def describe(result: dict) -> str:
    """One fit in a line: status, worst ESS, divergences, peak memory."""
    ess = "–" if result["ess_bulk_min"] is None else f"{min(result['ess_bulk_min'], result['ess_tail_min']):.0f}"
    divergences = "–" if result["divergences"] is None else result["divergences"]
    return f"{result['status']}: min ESS {ess}, divergences {divergences}, peak {result['peak_rss_mb']:.0f} MB"


def meets_target(result: dict) -> dict[str, bool]:
    """Each criterion of the 10,000-estimate target for one measured fit (a killed fit meets none: its memory is a lower bound)."""
    ess = min(result["ess_bulk_min"] or 0, result["ess_tail_min"] or 0)
    return dict(
        seconds=not result["timed_out"] and result["seconds"] <= TARGET["seconds"],
        ess=ess >= TARGET["ess_min"],
        divergences=result["divergences"] is not None and result["divergences"] <= TARGET["divergences"],
        memory=not result["timed_out"] and result["peak_rss_mb"] <= TARGET["peak_rss_mb"],
    )


def revision() -> dict:
    """The commit measured and the files under metaeval/ that differ from it (the working tree is what runs)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.rstrip()

    return dict(commit=git("rev-parse", "HEAD"), modified=git("status", "--porcelain", "--", "metaeval").splitlines())


def write_result(name: str, record: dict) -> Path:
    """Write ``record`` to ``bench/results/<name>.json``, or ``<name>-2.json``, ``-3``, ... when a run of the same day
    has written that one (a record is never overwritten); returns the path."""
    dest, n = ROOT / "bench" / "results" / f"{name}.json", 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{name}-{n}.json")
    dest.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return dest


def run_sizes(sizes: list[int], runs: int, model: str, seed: int = 1) -> list[dict]:
    """Measure every size ``runs`` times, one fit at a time; each fit gets a fresh output folder."""
    rows = []
    for n in sizes:
        projects, domains = grid(n)
        with tempfile.TemporaryDirectory(prefix=f"metaeval-scaling-{n}-") as tmp:
            csv = Path(tmp) / "evidence.csv"
            write_csv(csv, n, projects, domains, seed)
            results = [measure_fit(csv, Path(tmp) / f"fit-{i}", model=model) for i in range(runs)]
        for r in results:
            print(f"{n:>6} estimates: {r['seconds']:7.1f} s, {describe(r)}", flush=True)
        rows.append(dict(estimates=n, projects=projects, domains=domains, seed=seed, runs=results))
    return rows


def aggregate(row: dict) -> dict:
    """One table line for a size: median time, highest peak memory, worst diagnostics over its runs."""
    runs = row["runs"]

    def worst(key: str, pick):
        values = [r[key] for r in runs if r[key] is not None]
        return pick(values) if values else None

    statuses = sorted({r["status"] for r in runs})
    return dict(estimates=row["estimates"], projects=row["projects"], domains=row["domains"], n_runs=len(runs),
                median_s=statistics.median(r["seconds"] for r in runs), min_s=min(r["seconds"] for r in runs),
                max_s=max(r["seconds"] for r in runs), peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
                ess_bulk_min=worst("ess_bulk_min", min), ess_tail_min=worst("ess_tail_min", min),
                rhat_max=worst("rhat_max", max), divergences=worst("divergences", max),
                gate_passed=sum(r["passed"] is True for r in runs), status=", ".join(statuses),
                timed_out=any(r["timed_out"] for r in runs))


def _fmt(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log y on log x: the exponent b in y ∝ x^b."""
    if len(points) < 2:
        return None
    lx, ly = [math.log(x) for x, _ in points], [math.log(y) for _, y in points]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def markdown(record: dict) -> str:
    """bench/scaling.md: how it was measured, the table, and a reading computed from the numbers."""
    lines = [
        f"# Scaling curve: fresh-process `metaeval fit --model {record['model']}` from 100 to 10,000 estimates",
        "",
        (f"Measured {record['date']} on {record['machine']['cpus']} CPUs ({record['machine']['platform']}, Python "
         f"{record['machine']['python']}; load average before: {', '.join(f'{x:.2f}' for x in record['load_average'])}) "
         f"by `{record['command']}`. Raw numbers: `bench/results/scaling-{record['model']}-{record['date']}.json`; figure: `bench/scaling-{record['model']}.png`."),
        "",
        ("Each size is a synthetic evidence base from `bench/synthetic.py` (seed 1; ten estimates a project; "
         f"model `{record['model']}`, 4 chains × (1000 tune + 1000 draws)), fitted by `metaeval fit --csv FILE --model {record['model']} --refit --format json` "
         "in a fresh process with the compile cache as it was. Peak memory is the child's maximum resident set size. "
         f"A fit is killed after {TIMEOUT_S} s. Time is the median over the runs of a size, memory and diagnostics the worst."),
        "",
        "| estimates | projects | domains | runs | time (s) | peak memory (MB) | min bulk ESS | min tail ESS | max R-hat | divergences | gate passed | status |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = [aggregate(r) for r in record["sizes"]]
    for a in rows:
        spread = f" ({a['min_s']:.1f}–{a['max_s']:.1f})" if a["n_runs"] > 1 else ""
        lines.append(f"| {a['estimates']:,} | {a['projects']:,} | {a['domains']} | {a['n_runs']} | {a['median_s']:.1f}{spread} | "
                     f"{a['peak_rss_mb']:.0f} | {_fmt(a['ess_bulk_min'], '.0f')} | {_fmt(a['ess_tail_min'], '.0f')} | "
                     f"{_fmt(a['rhat_max'], '.4f')} | {_fmt(a['divergences'], 'd')} | {a['gate_passed']}/{a['n_runs']} | {a['status']} |")
    if record.get("revision"):
        rev = record["revision"]
        lines += ["", f"Commit `{rev['commit'][:12]}`" + (f", with uncommitted changes in {len(rev['modified'])} file(s) under metaeval/."
                                                       if rev["modified"] else ", no uncommitted changes under metaeval/.")]
    lines += ["", "## Reading", ""]
    lines += [f"- {note}" for note in record.get("notes", [])]
    done = [a for a in rows if not a["timed_out"]]
    if len(done) >= 2:
        b_time = slope([(a["estimates"], a["median_s"]) for a in done])
        b_mem = slope([(a["estimates"], a["peak_rss_mb"]) for a in done])
        last = slope([(a["estimates"], a["median_s"]) for a in done[-2:]])
        lines.append(f"- Over the {len(done)} sizes that finished, time grows as about n^{b_time:.2f} and peak memory as about "
                     f"n^{b_mem:.2f} (least-squares slopes on the log-log scale; start-up and compilation dominate the small sizes). "
                     f"Between {done[-2]['estimates']:,} and {done[-1]['estimates']:,} estimates time grows as n^{last:.2f}.")
    if any(a["timed_out"] for a in rows):
        lines.append("- A timed-out fit was killed: its time and peak memory are lower bounds.")
    for a in rows:
        if a["status"] != "ok":
            reasons = sorted({f for r in next(x for x in record["sizes"] if x["estimates"] == a["estimates"])["runs"]
                              for f in (r["failures"] or ([r["error"]] if r["error"] else []))})
            lines.append(f"- {a['estimates']:,} estimates: {a['status']}" + (f" ({'; '.join(reasons)})" if reasons else "") + ".")
    target = next((r for r in record["sizes"] if r["estimates"] == TARGET["estimates"]), None)
    if target:
        checks = [meets_target(r) for r in target["runs"]]
        verdict = {k: all(c[k] for c in checks) for k in checks[0]}
        lines.append(f"- Target for 10,000 estimates (≤ {TARGET['seconds']:.0f} s, every ESS ≥ {TARGET['ess_min']}, no divergences, "
                     f"peak memory ≤ {TARGET['peak_rss_mb'] / 1024:.0f} GB): "
                     + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in verdict.items()) + ".")
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    """bench/scaling.png: time and peak memory against estimates, log-log; failed gates and timeouts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = [aggregate(r) for r in record["sizes"]]
    n = [a["estimates"] for a in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for ax, key, label, target in ((axes[0], "median_s", "wall time (s)", TARGET["seconds"]),
                                   (axes[1], "peak_rss_mb", "peak memory (MB)", TARGET["peak_rss_mb"])):
        ax.plot(n, [a[key] for a in rows], color="0.4", lw=1, zorder=1)
        for status, marker, color in (("ok", "o", "tab:blue"), ("gate failed", "X", "tab:red"), ("error", "s", "tab:red"), ("timeout", "^", "black")):
            pts = [(a["estimates"], a[key]) for a in rows if status in a["status"].split(", ")]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=color, label=status, zorder=2)
        ax.scatter([TARGET["estimates"]], [target], marker="_", s=400, color="tab:green", label="10k target", zorder=3)
        ax.set(xscale="log", yscale="log", xlabel="estimates", ylabel=label)
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", lw=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"metaeval fit, fresh process, model {record['model']} ({record['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def render(record: dict) -> None:
    (ROOT / "bench" / f"scaling-{record['model']}.md").write_text(markdown(record), encoding="utf-8")
    plot(record, ROOT / "bench" / f"scaling-{record['model']}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N")
    parser.add_argument("--runs", type=int, default=1, help="fits per size (default 1)")
    parser.add_argument("--model", default="default", help="model to fit (default: default; marginal integrates the effects out)")
    parser.add_argument("--render", type=Path, metavar="FILE", help="only redraw scaling.md and scaling.png from a results file")
    args = parser.parse_args()
    if args.render:
        render(json.loads(args.render.read_text(encoding="utf-8")))
        return 0
    record = dict(date=dt.date.today().isoformat(), machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                  python=platform.python_version()), load_average=os.getloadavg(),
                  command=" ".join(["bench/scaling.py", *sys.argv[1:]]),
                  revision=revision(), timeout_s=TIMEOUT_S, target=TARGET, model=args.model,
                  sizes=run_sizes(sorted(args.sizes), args.runs, args.model))
    dest = ROOT / "bench" / "results" / f"scaling-{record['model']}-{record['date']}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    render(record)
    print(f"written: {dest.relative_to(ROOT)}, bench/scaling-{args.model}.md, bench/scaling-{args.model}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
