#!/usr/bin/env python3
"""Charts from the bench scripts' CSVs: bench/results/*.csv -> bench/results/*.png.

    .venv/bin/python bench/plots.py [--results DIR]     (make bench-plots)

- throughput_vs_workers.png: pmigrate's MB/s against --workers, one line per
  backend pair (bench_blobs.py, bench_cloud.py), one panel per size profile;
- blobs_vs_tools.png: pmigrate, cp and rclone side by side (bench_blobs.py);
- metadata_vs_pgloader.png: rows/s per direction, pmigrate and pgloader
  (bench_metadata.py);
- verify_vs_plain.png: verify against a plain read of the same bytes
  (bench_verify.py).

A chart whose CSV is absent is skipped with a note. Figures are plotted as
the scripts wrote them (medians or best of their rounds); nothing is timed here.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"
PROFILE = {
    "a": "mixed sizes", "b": "small blobs", "c": "one large blob", "d": "5,000 small blobs", "e": "one 4 KiB blob",
    "mixed": "mixed sizes", "small": "small blobs", "large": "large blobs",
}  # fmt: skip


def read(folder: Path, name: str) -> list[dict[str, str]]:
    path = folder / f"{name}.csv"
    if not path.exists():
        print(f"{path.name}: absent, its chart is skipped (run bench/bench_{name}.py)")
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def num(row: dict[str, str], key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def runs_of(*tables: list[dict[str, str]]) -> str:
    stamps = sorted({r.get("run", "") for t in tables for r in t if r.get("run")})
    if not stamps:
        return ""
    return f"runs {stamps[0]}" + (f" to {stamps[-1]}" if len(stamps) > 1 else "")


def save(fig, folder: Path, name: str, *, source: str) -> None:
    fig.text(0.99, 0.005, source, ha="right", va="bottom", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = folder / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def throughput_vs_workers(folder: Path, blobs: list[dict], cloud: list[dict]) -> None:
    # (profile) -> (pair label) -> {workers: MB/s}
    series: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in blobs:
        if r.get("tool") == "pmigrate" and num(r, "mb_per_s") is not None:
            # one line per scale: runs at other scales are other deployments
            pair = f"file → {'file' if r['target'] == 'local' else r['target']} (scale {float(r['scale']):g})"
            series[PROFILE.get(r["case"], r["case"])][pair][int(float(r["workers"]))] = num(r, "mb_per_s")
    for r in cloud:
        if num(r, "mb_per_s") is not None:
            pair = f"file → {r['target']} (bench_cloud)"
            series[PROFILE.get(r["profile"], r["profile"])][pair][int(float(r["workers"]))] = num(r, "mb_per_s")
    for panel in list(series):  # a single point says nothing about workers
        series[panel] = defaultdict(dict, {k: v for k, v in series[panel].items() if len(v) > 1})
        if not series[panel]:
            del series[panel]
    if not series:
        print("throughput_vs_workers.png: no pmigrate rows in blobs.csv or cloud.csv, skipped")
        return
    panels = sorted(series)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for pair, points in sorted(series[panel].items()):
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker="o", label=pair)
        ax.set_title(panel)
        ax.set_xlabel("--workers")
        ax.set_ylabel("MB/s (10^6 bytes)")
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({x for p in series[panel].values() for x in p}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("pmigrate blob copy throughput against workers")
    save(fig, folder, "throughput_vs_workers.png", source=runs_of(blobs, cloud))


def blobs_vs_tools(folder: Path, blobs: list[dict]) -> None:
    if not blobs:
        return
    # The highest worker count measured for each case and target, all tools at that count,
    # from the latest run at the largest scale measured at that count (runs at other
    # scales are other deployments).
    top: dict[tuple[str, str], int] = {}
    for r in blobs:
        key = (r["case"], r["target"])
        top[key] = max(top.get(key, 0), int(float(r["workers"])))
    chosen: dict[tuple[str, str], tuple[float, str]] = {}
    for r in blobs:
        key = (r["case"], r["target"])
        if int(float(r["workers"])) == top[key]:
            chosen[key] = max(chosen.get(key, (0.0, "")), (float(r["scale"]), r["run"]))
    blobs = [r for r in blobs if (float(r["scale"]), r["run"]) == chosen.get((r["case"], r["target"]))
             and int(float(r["workers"])) == top[(r["case"], r["target"])]]  # fmt: skip
    cases = sorted({c for c, _ in top})
    tools = [t for t in ("pmigrate", "cp", "cp+sync", "rclone", "rclone-fast") if any(r["tool"] == t for r in blobs)]
    fig, axes = plt.subplots(1, len(cases), figsize=(4.5 * len(cases), 4.2), squeeze=False)
    for ax, case in zip(axes[0], cases):
        # Small blobs are counted in files/s: their bytes say little.
        metric, unit = ("files_per_s", "files/s") if case in ("b", "d", "e") else ("mb_per_s", "MB/s (10^6 bytes)")
        targets = sorted(t for c, t in top if c == case)
        value = {(r["target"], r["tool"]): num(r, metric) for r in blobs
                 if r["case"] == case and int(float(r["workers"])) == top[(case, r["target"])]}  # fmt: skip
        width = 0.8 / len(tools)
        for i, tool in enumerate(tools):
            shift = (i - (len(tools) - 1) / 2) * width
            here = [(g + shift, value[(t, tool)]) for g, t in enumerate(targets) if value.get((t, tool))]
            if here:
                bars = ax.bar([x for x, _ in here], [y for _, y in here], width, label=tool, color=f"C{i}")
                ax.bar_label(bars, fmt="%.0f" if max(y for _, y in here) >= 10 else "%.1f", fontsize=7)
        ax.set_xticks(range(len(targets)))
        ax.set_xticklabels([f"file → {'file' if t == 'local' else t}\n{top[(case, t)]} workers" for t in targets], fontsize=8)
        ax.set_ylabel(unit)
        ax.set_title(PROFILE.get(case, case))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Blob copy: pmigrate, cp and rclone at the same concurrency")
    save(fig, folder, "blobs_vs_tools.png", source=runs_of(blobs))


def metadata_vs_pgloader(folder: Path, meta: list[dict]) -> None:
    if not meta:
        return
    files = max(int(float(r["files"])) for r in meta)
    rows = [r for r in meta if int(float(r["files"])) == files]
    labels = [f"{r['direction']}\n({r['tool']})" for r in rows]
    values = [num(r, "rows_per_s") or 0 for r in rows]
    colors = ["tab:orange" if r["tool"] != "pmigrate" else "tab:blue" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 1 + 0.7 * len(rows)))
    bars = ax.barh(range(len(rows)), values, color=colors)
    ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("rows/s")
    ax.set_title(f"Metadata copy of {int(float(rows[0]['rows'])):,} rows ({files:,} files)")
    ax.grid(axis="x", alpha=0.3)
    save(fig, folder, "metadata_vs_pgloader.png", source=runs_of(rows))


def verify_vs_plain(folder: Path, ver: list[dict]) -> None:
    rows = [r for r in ver if r.get("unit", "MB/s") == "MB/s" and num(r, "plain") is not None]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(rows) + 1), 4.5))
    xs = range(len(rows))
    a = ax.bar([x - 0.2 for x in xs], [num(r, "verify") for r in rows], 0.4, label="pmigrate verify (blob phase)")
    b = ax.bar([x + 0.2 for x in xs], [num(r, "plain") for r in rows], 0.4, label="plain read, no hashing")
    ax.bar_label(a, fmt="%.0f", fontsize=8)
    ax.bar_label(b, fmt="%.0f", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r['case']}\n{r['files']} blobs, {r['mib']} MiB, {r['workers']} workers" for r in rows], fontsize=8)
    ax.set_ylabel("MB/s (10^6 bytes), log scale")
    ax.set_yscale("log")  # page-cache reads and S3 on moto differ a hundredfold
    ax.set_title("Verify against a plain read of the same bytes")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save(fig, folder, "verify_vs_plain.png", source=runs_of(rows))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of the CSVs and charts (default: bench/results)")
    args = p.parse_args()
    folder = args.results
    if not folder.is_dir():
        print(f"{folder}: no results yet; run the bench scripts first", file=sys.stderr)
        return 1
    blobs, cloud = read(folder, "blobs"), read(folder, "cloud")
    throughput_vs_workers(folder, blobs, cloud)
    blobs_vs_tools(folder, blobs)
    metadata_vs_pgloader(folder, read(folder, "metadata"))
    verify_vs_plain(folder, read(folder, "verify"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
