"""Building and installing: what a user who types the usual commands gets."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("cmake") is None or not (ROOT / "CMakeLists.txt").exists(),
                    reason="needs cmake and the source tree")
def test_a_build_that_cannot_import_torch_says_what_to_type(tmp_path):
    """`pip install .` (build isolation) configures with an interpreter that has no torch: the configure step must
    stop at once and name `pip install --no-build-isolation .`, not fetch a second torch or fail obscurely."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    result = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"), f"-DPython_EXECUTABLE={python}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    message = " ".join((result.stdout + result.stderr).split())
    assert "this build cannot import torch" in message
    assert "pip install --no-build-isolation ." in message
