"""Every public entry point through the table of input classes of bad_input_walker.py, each entry point in its own
process: a crash (abort, segfault) fails that entry point and names the case it died in, instead of killing the suite.
"""

import subprocess
import sys
from pathlib import Path

import pytest

import pyseq
from bad_input_walker import ENTRIES

WALKER = Path(__file__).with_name("bad_input_walker.py")


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_bad_input_gives_a_clean_answer(entry, tmp_path):
    run = subprocess.run([sys.executable, str(WALKER), entry], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)  # the installed pyseq, not the source tree
    lines = run.stdout.splitlines()
    cases = [line for line in lines if line.startswith("case ")]
    failures = [f"{case}: {line}" for case, line in zip(cases, [l for l in lines if not l.startswith("case ")])
                if line.startswith("FAIL")]
    assert run.returncode >= 0, f"{entry} crashed (signal {-run.returncode}) in {cases[-1] if cases else 'setup'}"
    assert not failures, "\n".join(failures)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(cases) >= 10


# Public names with no tensor arguments of their own to walk: a result type, the NTM's state, a weight initializer,
# the position encoding and the Clockwork RNN's connectivity (made from sizes; tests/test_memnet.py and
# tests/test_clockwork.py test their bad sizes).
NOT_ENTRY_POINTS = {"functional.ProjectedKeys", "nn.NTMState", "nn.init_irnn_", "functional.position_encoding",
                    "functional.clockwork_connectivity"}


def test_every_public_name_is_walked():
    names = {f"functional.{n}" for n in pyseq.functional.__all__} | {f"nn.{n}" for n in pyseq.nn.__all__}
    walked = {".".join(entry.split(".")[:2]) for entry in ENTRIES}  # nn.CRF.decode walks nn.CRF
    assert sorted(names - walked - NOT_ENTRY_POINTS) == []
