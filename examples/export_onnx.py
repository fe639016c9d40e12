"""A Bi-LSTM + CRF tagger trained with pyseq, exported to ONNX (pyseq.onnx.export: the LSTM as ONNX's LSTM operator,
the CRF's Viterbi decoding as ONNX loops) and served by ONNX Runtime, on batches of any size and sentence length.

The tagger and its data are those of examples/bilstm_crf_tagger.py, with one difference: the LSTM reads the padded
batch (ONNX's operator runs every sequence every step), so training and serving see the same padding.

    python examples/export_onnx.py [--onnx tagger.onnx]   # full run
    python examples/export_onnx.py --quick                # the short run the tests use

The last line printed is a JSON object: token_accuracy (ONNX Runtime's tags against the gold ones), same_as_eager
(the share of test sentences whose ONNX Runtime tags equal the eager model's), ort_ms and eager_ms (decoding the test
set in batches of 64), seconds (of training).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import pyseq.onnx
from bilstm_crf_tagger import Tagger, fit, make_batch


class PaddedTagger(Tagger):
    """bilstm_crf_tagger's Tagger with the Bi-LSTM over the padded batch instead of a PackedSequence."""

    def emissions(self, words: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.project(self.lstm(self.embed(words))[0])

    def forward(self, words: torch.Tensor, mask: torch.Tensor):
        """Serving: the best tags [B, T] (-1 past each sentence) and their scores [B]."""
        return self.crf.viterbi(self.emissions(words), mask)


def train(quick: bool = False, seed: int = 0, onnx_path: str | None = None, log=print) -> dict:
    import onnxruntime

    torch.manual_seed(seed)
    model = PaddedTagger()
    test_set, seconds, _ = fit(model, quick, seed, log)

    words, _, mask = make_batch(test_set[:4])
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    program = pyseq.onnx.export(model, (words, mask), dynamic_shapes=({0: batch, 1: length}, {0: batch, 1: length}),
                                verbose=False)
    if onnx_path:
        program.save(onnx_path)
        log(f"exported to {onnx_path}")
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString())
    names = [i.name for i in session.get_inputs()]

    batches = [make_batch(test_set[i : i + 64]) for i in range(0, len(test_set), 64)]
    ort_start = time.perf_counter()
    served = [session.run(None, {names[0]: w.numpy(), names[1]: m.numpy()})[0] for w, _, m in batches]
    ort_ms = (time.perf_counter() - ort_start) * 1e3
    eager_start = time.perf_counter()
    with torch.no_grad():
        eager = [model(w, m)[0] for w, _, m in batches]
    eager_ms = (time.perf_counter() - eager_start) * 1e3

    correct = tokens = same = 0
    for (_, gold, mask), ort_tags, eager_tags in zip(batches, served, eager):
        ort_tags = torch.from_numpy(ort_tags)
        correct += int(((ort_tags == gold) & mask).sum())
        tokens += int(mask.sum())
        same += int((ort_tags == eager_tags).all(1).sum())
    return {"token_accuracy": correct / tokens, "same_as_eager": same / len(test_set), "ort_ms": round(ort_ms, 1),
            "eager_ms": round(eager_ms, 1), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    parser.add_argument("--onnx", default=None, help="also save the exported model here")
    args = parser.parse_args()
    print(json.dumps(train(quick=args.quick, onnx_path=args.onnx)))


if __name__ == "__main__":
    main()
