"""The examples, run in their short mode: they must train to the accuracy their docstrings state."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bilstm_crf_tagger_learns_the_toy_language():
    result = load("bilstm_crf_tagger").train(quick=True, log=lambda *_: None)
    assert result["accuracy"] >= 0.97, result
