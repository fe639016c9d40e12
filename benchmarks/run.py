"""The benchmark runner behind `make bench`: pyseq vs its reference, side by side in one process, as a table.

    python benchmarks/run.py [--quick] [--markdown] [--only TABLES] [--kernel auto|aten|portable|avx2|avx512]

--quick runs the smallest case of each family with a short time budget (a smoke test of the runner);
--only names the tables to measure (comma-separated, as in the JSON report: recurrent, recurrent_autocast, ctc,
decoding, crf, attention, ntm, memnet, clockwork, scrn, recurrent_step), all by default;
--markdown prints the table in the form benchmarks/RESULTS.md records;
--kernel forces pyseq's CPU recurrent kernel (see pyseq.set_recurrent_kernel), to compare schedules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial

import torch

sys.path.insert(0, os.path.dirname(__file__))

import pyseq  # noqa: E402
import harness  # noqa: E402
from harness import cpu_model, gemm_rate  # noqa: E402
import attention_cases  # noqa: E402
import clockwork_cases  # noqa: E402
import crf_cases  # noqa: E402
import ctc_cases  # noqa: E402
import memnet_cases  # noqa: E402
import ntm_cases  # noqa: E402
import rnn_cases  # noqa: E402
import scrn_cases  # noqa: E402

# (row key, header, format) of each table.
COLUMNS = [
    ("case", "case", "{}"),
    ("pass", "pass", "{}"),
    ("pyseq_ms", "pyseq ms", "{:.2f}"),
    ("torch_ms", "torch ms", "{:.2f}"),
    ("speedup", "torch/pyseq", "{:.2f}x"),
    ("pyseq_gflops", "pyseq GF/s", "{:.0f}"),
    ("torch_gflops", "torch GF/s", "{:.0f}"),
    ("gemm_gflops", "GEMM-only GF/s", "{:.0f}"),
]
CTC_COLUMNS = COLUMNS[:5]
AUTOCAST_COLUMNS = CTC_COLUMNS + [("floor_ms", "matrix products at bf16 GEMM rate, ms", "{:.2f}")]
DECODE_COLUMNS = [
    ("case", "decoding / alignment", "{}"),
    ("pyseq_ms", "pyseq ms", "{:.2f}"),
    ("torch_ms", "reference ms", "{:.2f}"),
    ("speedup", "reference/pyseq", "{:.1f}x"),
]
CRF_COLUMNS = [
    ("case", "case", "{}"),
    ("pass", "pass", "{}"),
    ("pyseq_ms", "pyseq ms", "{:.2f}"),
    ("torch_ms", "pytorch-crf ms", "{:.2f}"),
    ("speedup", "pytorch-crf/pyseq", "{:.1f}x"),
]
ATTENTION_COLUMNS = [
    ("case", "case", "{}"),
    ("pass", "pass", "{}"),
    ("reference", "reference", "{}"),
    ("pyseq_ms", "pyseq ms", "{:.2f}"),
    ("torch_ms", "reference ms", "{:.2f}"),
    ("speedup", "reference/pyseq", "{:.2f}x"),
    ("pyseq_mb", "pyseq peak MB", "{:.1f}"),
    ("ref_mb", "reference peak MB", "{:.1f}"),
    ("memory_ratio", "memory ratio", "{:.1f}x"),
]
STEP_COLUMNS = [
    ("case", "recurrent step", "{}"),
    ("ms", "ms", "{:.2f}"),
    ("gflops", "GF/s", "{:.0f}"),
    ("of_peak", "of GEMM 2048^3", "{:.0%}"),
]


# A measurement whose repeated timings spread wider than this (interquartile range / median) was disturbed.
WIDE_SPREAD = 0.2


def format_cell(fmt: str, value) -> str:
    """A value in its column's format; a ratio below 0.1 with two significant digits (not "0.0x")."""
    if fmt.endswith("x}") and isinstance(value, float) and 0 < value < 0.1:
        return f"{value:.2g}x"
    return fmt.format(value)


def print_table(columns, rows, markdown: bool) -> None:
    if not rows:
        return
    cells = [[format_cell(fmt, row[key]) for key, _, fmt in columns] for row in rows]
    names = [name for _, name, _ in columns]
    if markdown:
        print("| " + " | ".join(names) + " |")
        print("|" + "---|" * len(columns))
        for line in cells:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(name), *(len(c[i]) for c in cells)) for i, name in enumerate(names)]
        print("  ".join(name.ljust(w) for name, w in zip(names, widths)))
        for line in cells:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    print()


def measure_all(measure, cases, columns, budget) -> list:
    """Forward and forward+backward of each case, each row printed as soon as it is measured."""
    rows = []
    for case in cases:
        for backward in (False, True):
            row = measure(case, backward, budget_s=budget)
            rows.append(row)
            print("  ".join(f"{name}={format_cell(fmt, row[key])}" for key, name, fmt in columns), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write every row, the machine and versions as JSON")
    parser.add_argument("--only", metavar="TABLES", help="comma-separated tables to measure (default: all)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    def wanted(table: str) -> bool:
        return only is None or table in only
    pyseq.set_recurrent_kernel(args.kernel)

    threads = torch.get_num_threads()
    info = pyseq.build_info()
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; torch {torch.__version__}, {threads} threads; "
          f"pyseq {info['version']} (CPU kernels: {info['cpu_isa']})")
    peak, peak_bf16 = gemm_rate(), gemm_rate(torch.bfloat16)
    print(f"torch GEMM 2048^3: float32 {peak:.0f} GFLOP/s, bfloat16 {peak_bf16:.0f} GFLOP/s; pyseq recurrent "
          f"kernels: {info['recurrent_kernel']} (float32), {info['bf16_recurrent_kernel']} (bfloat16)")
    print("GEMM-only: torch.mm alone on the same matrix products, at the same shapes (the floor for a design built")
    print("on per-step GEMM calls); GF/s columns count matrix-product FLOPs only.\n")

    cases = rnn_cases.all_cases()
    budget = 1.0
    if args.quick:
        cases = [c for c in cases if (c.T, c.B, c.I, c.H) == rnn_cases.SIZES[2]]
        budget = 0.1
    rows = measure_all(rnn_cases.measure, cases, COLUMNS, budget) if wanted("recurrent") else []
    autocast_rows = []
    if wanted("recurrent_autocast"):
        autocast_list = rnn_cases.autocast_cases()[:1] if args.quick else rnn_cases.autocast_cases()
        autocast_rows = measure_all(partial(rnn_cases.measure_autocast, bf16_gflops=peak_bf16), autocast_list,
                                    AUTOCAST_COLUMNS, budget)
    ctc_list = ctc_cases.all_cases()[:1] if args.quick else ctc_cases.all_cases()
    ctc_rows = measure_all(ctc_cases.measure, ctc_list, CTC_COLUMNS, budget) if wanted("ctc") else []
    decode_rows = []
    if wanted("decoding"):
        decode_rows = [ctc_cases.measure_greedy(budget), ctc_cases.measure_align(budget)]
        decode_rows += [ctc_cases.measure_beam(width, budget)
                        for width in ctc_cases.BEAM_WIDTHS[: 1 if args.quick else 2]]
        if not args.quick:
            decode_rows += [row for row in (ctc_cases.measure_pyctcdecode(w, budget) for w in ctc_cases.BEAM_WIDTHS)
                            if row]
    for row in decode_rows:
        print(f"{row['case']}: pyseq {row['pyseq_ms']:.2f} ms, reference {row['torch_ms']:.2f} ms, "
              f"{format_cell('{:.1f}x', row['speedup'])}", flush=True)

    crf_rows = []
    for case in crf_cases.all_cases()[: 1 if args.quick else None] if wanted("crf") else []:
        for row in (crf_cases.measure_nll(case, budget), crf_cases.measure_decode(case, budget),
                    crf_cases.measure_decode(case, budget, tensor_output=True)):
            crf_rows.append(row)
            print("  ".join(f"{name}={format_cell(fmt, row[key])}" for key, name, fmt in CRF_COLUMNS), flush=True)

    attention_rows = []
    for case in attention_cases.all_cases()[: 1 if args.quick else None] if wanted("attention") else []:
        for comparison in attention_cases.comparisons(case):
            for backward in (False, True)[: 2 if comparison[4] else 1]:
                row = attention_cases.measure(*comparison, backward, budget)
                attention_rows.append((row, comparison, backward))
                print("  ".join(f"{name}={format_cell(fmt, row[key])}" for key, name, fmt in ATTENTION_COLUMNS[:6]),
                      flush=True)

    ntm_rows, memnet_rows, clockwork_rows, scrn_rows = [], [], [], []
    if wanted("ntm"):
        ntm_rows = measure_all(ntm_cases.measure, ntm_cases.all_cases(), CTC_COLUMNS, budget)
        ntm_rows += [ntm_cases.measure_layer(case, budget) for case in ntm_cases.all_cases()]
    if wanted("memnet"):
        memnet_rows = measure_all(memnet_cases.measure, memnet_cases.all_cases(), CTC_COLUMNS, budget)
    if wanted("clockwork"):
        clockwork_rows = measure_all(clockwork_cases.measure, clockwork_cases.all_cases(), CTC_COLUMNS, budget)
        clockwork_rows += measure_all(clockwork_cases.measure_against_rnn, clockwork_cases.all_cases(), CTC_COLUMNS,
                                      budget)
    if wanted("scrn"):
        scrn_rows = measure_all(scrn_cases.measure, scrn_cases.all_cases(), CTC_COLUMNS, budget)

    print()
    step_rows = []
    if not args.quick and wanted("recurrent_step"):
        print("Recurrent step alone (per-step product + fused cell update, input size 1), against the 2048^3 GEMM:")
        for cell in rnn_cases.CELLS:
            for B, H in rnn_cases.STEP_SIZES:
                row = rnn_cases.measure_step(cell, B, H)
                row["of_peak"] = row["gflops"] / peak
                step_rows.append(row)
                print(f"  {row['case']}: {row['ms']:.2f} ms, {row['gflops']:.0f} GF/s = {100 * row['of_peak']:.0f}% "
                      f"of {peak:.0f}", flush=True)
        print()
    # Peak memory last: measuring it changes the allocator's settings for the rest of the process.
    attention_cases.set_exact_peak_memory()
    for row, comparison, backward in attention_rows:
        attention_cases.add_memory(row, *comparison[1:5], backward)
    tables = {
        "recurrent": (COLUMNS, rows),
        "recurrent_autocast": (AUTOCAST_COLUMNS, autocast_rows),
        "ctc": (CTC_COLUMNS, ctc_rows),
        "decoding": (DECODE_COLUMNS, decode_rows),
        "crf": (CRF_COLUMNS, crf_rows),
        "attention": (ATTENTION_COLUMNS, [row for row, _, _ in attention_rows]),
        "ntm": (CTC_COLUMNS, ntm_rows),
        "memnet": (CTC_COLUMNS, memnet_rows),
        "clockwork": (CTC_COLUMNS, clockwork_rows),
        "scrn": (CTC_COLUMNS, scrn_rows),
        "recurrent_step": (STEP_COLUMNS, step_rows),
    }
    for columns, table in tables.values():
        print_table(columns, table, args.markdown)
    wide = [spread for spread in harness.SPREADS if spread > WIDE_SPREAD]
    if len(wide) > 0.1 * len(harness.SPREADS):
        print(f"WARNING: the timings spread widely in {len(wide)} of {len(harness.SPREADS)} measurements (interquartile "
              f"range over {WIDE_SPREAD:.0%} of the median, up to {max(wide):.0%}): the machine was busy, and these "
              "ratios may be far from those of an idle machine. Rerun when it is idle.\n")
    if args.json:
        report = {
            "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "threads": threads},
            "build_info": info,
            "gemm_gflops": {"float32": peak, "bfloat16": peak_bf16},
            "tables": {name: table for name, (_, table) in tables.items()},
            "wide_spreads": f"{len(wide)} of {len(harness.SPREADS)}",
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
