"""Plants one bug at a time in the CUDA kernels and checks that the emulation build's tests catch each.

The bugs: each __syncthreads() removed, each warp-shuffle loop's first offset halved, each grid.sync() removed. For
each, the kernel file is changed, the emulation build (make cuda-emulate's build/cuda-emulate, which must exist) is
rebuilt, and the emulated tests of the kernel's family run; a bug they do not catch is reported, and the script
exits non-zero. The file is restored afterwards, whatever happens. Run it on a scratch copy of the repository (it
edits csrc/): about half a minute per bug on 2 cores.

    python tools/plant_kernel_bugs.py [--family ctc] [--build build/cuda-emulate]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAMILY_TESTS = {
    "ctc": ["tests/test_ctc.py", "tests/test_ctc_cuda.py"],
    "crf": ["tests/test_crf.py", "tests/test_crf_cuda.py"],
    "attention": ["tests/test_attention.py", "tests/test_attention_cuda.py"],
    "ntm": ["tests/test_ntm.py"],
    "memnet": ["tests/test_memnet.py"],
    "clockwork": ["tests/test_clockwork.py"],
    "scrn": ["tests/test_scrn.py"],
    "rnn": ["tests/test_rnn.py", "tests/test_rnn_cuda.py"],
}

# (kind, pattern, replacement): each match is one planted bug.
MUTATIONS = [
    ("barrier removed", re.compile(r"__syncthreads\(\);"), ";"),
    ("shuffle offset halved", re.compile(r"int offset = (kWarp / 2|16);"),
     lambda m: "int offset = " + ("kWarp / 4" if "kWarp" in m.group(1) else "8") + ";"),
    ("grid.sync() removed", re.compile(r"grid\.sync\(\);"), ";"),
]


def planted_bugs(text):
    for kind, pattern, replacement in MUTATIONS:
        for match in pattern.finditer(text):
            new = replacement(match) if callable(replacement) else replacement
            line = text.count("\n", 0, match.start()) + 1
            yield kind, line, text[: match.start()] + new + text[match.end():]


def run(cmd, **kwargs):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILY_TESTS), action="append")
    parser.add_argument("--build", default="build/cuda-emulate")
    args = parser.parse_args()
    build = ROOT / args.build
    stage = build / "stage"
    if not (build / "build.ninja").exists():
        sys.exit(f"no emulation build in {build}: run make cuda-emulate first")
    survivors = []
    for family in args.family or sorted(FAMILY_TESTS):
        source = ROOT / "csrc" / family / f"{family}_cuda.cu"
        original = source.read_text()
        try:
            for kind, line, mutated in planted_bugs(original):
                source.write_text(mutated)
                built = run(["cmake", "--build", str(build)])
                if built.returncode != 0:
                    print(f"{source.name}:{line}: {kind}: does not compile\n{built.stdout[-2000:]}")
                    survivors.append((source.name, line, kind))
                    continue
                for lib in build.glob("_C*.so"):
                    shutil.copy(lib, stage / "pyseq" / lib.name)
                tests = run([sys.executable, "-P", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
                             "not slow", "-k", "emulat", *FAMILY_TESTS[family]],
                            env={**os.environ, "PYTHONPATH": str(stage)}, timeout=1200)
                caught = tests.returncode == 1 or tests.returncode < 0  # tests failed, or crashed (not: could not run)
                failed = [l for l in tests.stdout.splitlines() if l.startswith("FAILED")] or [tests.stdout[-300:]]
                print(f"{source.name}:{line}: {kind}: {'caught by ' + failed[0][7:90] if caught else 'NOT CAUGHT'}",
                      flush=True)
                if not caught:
                    survivors.append((source.name, line, kind))
        finally:
            source.write_text(original)
    run(["cmake", "--build", str(build)])
    for lib in build.glob("_C*.so"):
        shutil.copy(lib, stage / "pyseq" / lib.name)
    print(f"{len(survivors)} planted bugs not caught" + "".join(f"\n  {f}:{l}: {k}" for f, l, k in survivors))
    sys.exit(1 if survivors else 0)


if __name__ == "__main__":
    main()
