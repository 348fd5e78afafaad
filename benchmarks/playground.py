"""The playground's floors, measured with the page open in headless Chromium: a full default-preset
MNIST run finishes in the page within 2x of the CLI's training time, with the curves and templates
redrawn at least 10 times a second.

    python -m benchmarks.playground --repeats 5            # writes benchmarks/results/playground.*

Each repeat trains the same config twice, interleaved: `torchlogreg train` in a subprocess (its
`train_seconds`, the engine's time, and the command's wall time), then the page (Start clicked
through the browser, timed by the page itself from the click to the finished frame; the server's
engine time; the redraws the page made meanwhile). Medians and ratios; the machine is shared, so
single timings are noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.compare import default_data_root
from benchmarks.localserver import chromium, local_server

REPO = Path(__file__).resolve().parents[1]


def cli_run(data_root: str, out: Path, extra: list[str]) -> dict:
    """`torchlogreg train` as a user runs it: its engine time and the command's wall time."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "torchlogreg", "train", "--data-root", data_root, *extra]
    subprocess.run([*command, "--out", str(out), "--quiet"], check=True, capture_output=True)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": wall,
        "accuracy": metrics["test"]["accuracy"],
    }


def page_run(browser, url: str) -> dict:
    """One run in the page: click Start, wait for the finished frame; the page's own clock."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(
        lambda _: browser.execute_script("return window.playground.command !== null")
    )
    browser.execute_script("document.getElementById('start').click()")
    WebDriverWait(browser, 600, poll_frequency=0.05).until(
        lambda _: browser.execute_script(
            "return window.playground.run && window.playground.run.finishedAt !== null"
        )
    )
    run = browser.execute_script(
        """const run = window.playground.run;
        const draws = window.playground.updates.filter((t) => t >= run.startedAt && t <= run.finishedAt + 50);
        const gaps = draws.slice(1).map((t, i) => t - draws[i]);
        return {seconds: (run.finishedAt - run.startedAt) / 1000, train_seconds: run.metrics.train_seconds,
                accuracy: run.metrics.test.accuracy, draws: draws.length, rows: run.rows.length,
                first: draws.length ? (draws[0] - run.startedAt) / 1000 : null,
                span: draws.length > 1 ? (draws[draws.length - 1] - draws[0]) / 1000 : null,
                max_gap: gaps.length ? Math.max(...gaps) / 1000 : null};"""
    )
    run["updates_per_second"] = (run["draws"] - 1) / run["span"] if run["span"] else None
    return run


def table(rows: list[dict], summary: dict) -> str:
    lines = [
        "| repeat | CLI train s | CLI wall s | page s (click to finished) | page engine s | redraws/s | "
        "longest gap s | test accuracy (CLI, page) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows):
        cli, page = row["cli"], row["page"]
        cells = [
            f"{cli['train_seconds']:.3f}",
            f"{cli['wall_seconds']:.2f}",
            f"{page['seconds']:.3f}",
            f"{page['train_seconds']:.3f}",
            f"{page['updates_per_second'] or 0:.1f}",
            f"{page['max_gap'] or 0:.3f}",
            f"{cli['accuracy']:.4f}, {page['accuracy']:.4f}",
        ]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    s = summary
    lines += [
        "",
        f"- median CLI training time {s['cli_train']:.3f} s (wall {s['cli_wall']:.2f} s); median time in "
        f"the page from Start to the finished run {s['page']:.3f} s: **{s['ratio']:.2f}x** the CLI's "
        f"training time (floor: 2x); the page's engine time {s['page_train']:.3f} s "
        f"({s['engine_ratio']:.2f}x). The page's time includes building the training (build()), which "
        f"the CLI's training time leaves out; against the command's wall time: {s['wall_ratio']:.2f}x.",
        f"- redraws of the curves and templates while it trains: median {s['updates']:.1f} a second, "
        f"lowest {s['updates_min']:.1f} (floor: 10).",
        f"- the page's test accuracy equals the CLI's in every repeat: {s['same_accuracy']}.",
    ]
    return "\n".join(lines)


def summarize(rows: list[dict]) -> dict:
    """Medians over the repeats, and the ratios the floors are about."""
    median = statistics.median
    summary = {
        "cli_train": median(r["cli"]["train_seconds"] for r in rows),
        "cli_wall": median(r["cli"]["wall_seconds"] for r in rows),
        "page": median(r["page"]["seconds"] for r in rows),
        "page_train": median(r["page"]["train_seconds"] for r in rows),
        "updates": median(r["page"]["updates_per_second"] or 0 for r in rows),
        "updates_min": min(r["page"]["updates_per_second"] or 0 for r in rows),
        "same_accuracy": all(r["cli"]["accuracy"] == r["page"]["accuracy"] for r in rows),
    }
    summary["ratio"] = summary["page"] / summary["cli_train"]
    summary["engine_ratio"] = summary["page_train"] / summary["cli_train"]
    summary["wall_ratio"] = summary["page"] / summary["cli_wall"]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-root", default=default_data_root())
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results"), help="folder for playground.md/json"
    )
    parser.add_argument("--epochs", type=int, help="shorter runs (smoke tests); default: the preset's")
    args = parser.parse_args(argv)
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    query = "?preset=default&dataset=mnist" + (f"&epochs={args.epochs}" if args.epochs else "")
    rows = []
    server = ("playground", "--data-root", args.data_root)
    with tempfile.TemporaryDirectory() as work, local_server(*server, "--runs", f"{work}/runs") as (url, _):
        work = Path(work)
        browser = chromium(work / "profile")
        try:
            page_run(browser, url + "/" + query)  # warm-up: the server reads MNIST once
            for repeat in range(args.repeats):
                cli = cli_run(args.data_root, work / f"cli-{repeat}", extra)
                page = page_run(browser, url + "/" + query)
                rows.append({"cli": cli, "page": page})
                print(
                    f"repeat {repeat + 1}: CLI {cli['train_seconds']:.3f} s, page {page['seconds']:.3f} s, "
                    f"{page['updates_per_second'] or 0:.1f} redraws/s",
                    flush=True,
                )
        finally:
            browser.quit()
    summary = summarize(rows)
    text = table(rows, summary)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "playground" + (f"-{args.epochs}epochs" if args.epochs else "")
    (out / f"{name}.md").write_text(
        f"# The playground's floors (`python -m benchmarks.playground`)\n\n{text}\n"
    )
    (out / f"{name}.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
