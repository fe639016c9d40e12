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


def test_build_info_names_the_torch_built_for_and_the_one_running():
    import torch

    import pyseq

    info = pyseq.build_info()
    assert info["torch"] == pyseq._C.built_for_torch
    assert info["torch_running"] == torch.__version__


def test_another_torch_release_is_a_clear_import_error(tmp_path):
    """A torch of another minor release (another C++ ABI) than the one pyseq was built for: ImportError that says
    which two and what to do, not a crash or an undefined-symbol message later."""
    code = "import torch; torch.__version__ = '2.99.0'; import pyseq"
    # from outside the source tree, so that the installed (or staged) package is the one imported
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    assert "ImportError: pyseq was built for torch" in result.stderr
    assert "but torch 2.99.0 is installed" in result.stderr
    assert "pip install --no-build-isolation ." in result.stderr


def test_modules_list_their_public_names_only():
    import pyseq

    for module in (pyseq.ctc, pyseq.crf):
        assert dir(module) == sorted(module.__all__)
        assert all(hasattr(module, name) for name in module.__all__)
        assert not {"torch", "Tensor", "NamedTuple", "dataclasses"} & set(dir(module))
