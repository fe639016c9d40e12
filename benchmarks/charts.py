"""Charts of a benchmark report (`run.py --json`): per family, pyseq's speed-up over the reference for every case,
one horizontal bar per row, on a log scale with 1x marked (`make bench` writes them to benchmarks/charts/).

Usage: python benchmarks/charts.py [REPORT_JSON] [OUT_DIR]
"""

from __future__ import annotations

import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
TITLES = {
    "recurrent": "Recurrent layers, float32: torch.nn time / pyseq time",
    "recurrent_autocast": "Recurrent layers under CPU bfloat16 autocast: torch.nn time / pyseq time",
    "ctc": "CTC loss: F.ctc_loss time / pyseq time",
    "decoding": "CTC decoding and alignment: reference time / pyseq time",
    "crf": "CRF: pytorch-crf time / pyseq time",
    "attention": "Attention: reference time / pyseq time",
    "ntm": "NTM memory loop: torch-ops time / pyseq time",
}


def label(row: dict) -> str:
    parts = [row["case"]] + [row[key] for key in ("pass", "reference") if key in row]
    return ", ".join(parts)


def chart(name: str, rows: list[dict], machine: str, out: pathlib.Path) -> None:
    rows = [row for row in rows if "speedup" in row]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.3))
    speedups = [row["speedup"] for row in rows]
    colors = ["tab:green" if s >= 1 else "tab:red" for s in speedups]
    y = range(len(rows))
    ax.barh(y, speedups, color=colors)
    ax.set_yticks(list(y), [label(row) for row in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    # 1x always in view, and ticks at 1, 2 and 5 of each decade: a chart whose ratios lie within one decade would
    # otherwise show a single tick
    ax.set_xlim(min(*speedups, 1.0) / 1.3, max(*speedups, 1.0) * 1.8)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, s in enumerate(speedups):
        ax.text(s, i, f" {s:.2f}x" if s >= 0.1 else f" {s:.2g}x", va="center", fontsize=7)
    ax.set_xlabel("speed-up (higher is better for pyseq)")
    ax.set_title(f"{TITLES.get(name, name)}\n{machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    report_path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "charts"
    out.mkdir(parents=True, exist_ok=True)
    report = json.loads(report_path.read_text())
    m = report["machine"]
    machine = (f"{m['cpu']}, {m['threads']} threads; torch {report['build_info']['torch_running']}, "
               f"pyseq {report['build_info']['version']}")
    for name, rows in report["tables"].items():
        chart(name, rows, machine, out)
    print(f"charts in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
