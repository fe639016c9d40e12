"""Beam search against exhaustive search over a tiny vocabulary, with a decoder whose next-token distribution
depends on the whole prefix (through its state)."""

import itertools

import pytest
import torch

import pyseq
from pyseq.seq2seq import beam_search

V, D, STOP, START = 3, 4, 0, 1  # tokens 0 (stop), 1, 2; the start symbol is fed as token 1


def make_decoder(seed, state_batch_dim=0):
    g = torch.Generator().manual_seed(seed)
    A, E, O = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((D, D), (V, D), (D, V)))

    def step(tokens, state):
        h = state[0] if state_batch_dim == 1 else state
        h = h.squeeze(0) if state_batch_dim == 1 else h
        h = torch.tanh(h @ A + E[tokens])
        log_probs = (2.0 * h @ O).log_softmax(-1)
        return log_probs, ((h.unsqueeze(0),) if state_batch_dim == 1 else h)

    return step


def exhaustive(step, h0, max_length, length_penalty):
    """Every sequence: ended by the stop symbol within max_length tokens, or cut at max_length."""
    results = []
    for length in range(1, max_length + 1):
        for body in itertools.product(range(1, V), repeat=length - 1):
            for last in range(V):
                if last != STOP and length < max_length:
                    continue
                seq = list(body) + [last]
                state, token, total = h0.unsqueeze(0), torch.tensor([START]), 0.0
                for tok in seq:
                    log_probs, state = step(token, state)
                    total += log_probs[0, tok].item()
                    token = torch.tensor([tok])
                score = total / length**length_penalty if length_penalty else total
                tokens = seq[:-1] if last == STOP else seq
                results.append((score, tokens, last == STOP))
    return sorted(results, key=lambda r: -r[0])


@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
def test_wide_beam_is_exhaustive_search(length_penalty):
    step = make_decoder(0)
    h0 = torch.randn(2, D, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    got = beam_search(step, h0, batch_size=2, start=START, stop=STOP, beam_width=16, max_length=4, nbest=10,
                      length_penalty=length_penalty)
    for b in range(2):
        expected = exhaustive(step, h0[b], 4, length_penalty)[:10]
        assert [h.tokens for h in got[b]] == [e[1] for e in expected]
        assert [h.stopped for h in got[b]] == [e[2] for e in expected]
        torch.testing.assert_close(torch.tensor([h.score for h in got[b]]), torch.tensor([e[0] for e in expected]),
                                   rtol=1e-9, atol=1e-9)


def test_greedy_is_beam_width_one_and_states_reorder_along_their_batch_dimension():
    step0, step1 = make_decoder(3), make_decoder(3, state_batch_dim=1)
    h0 = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    by_dim0 = beam_search(step0, h0, 3, START, STOP, beam_width=3, max_length=6, nbest=2)
    by_dim1 = beam_search(step1, (h0.unsqueeze(0),), 3, START, STOP, beam_width=3, max_length=6, nbest=2,
                          state_batch_dim=1)
    assert by_dim0 == by_dim1
    greedy = beam_search(step0, h0, 3, START, STOP, beam_width=1, max_length=6)
    for b in range(3):  # greedy: the argmax token at every step
        state, token, tokens = h0[b:b + 1], torch.tensor([START]), []
        for _ in range(6):
            log_probs, state = step0(token, state)
            token = log_probs.argmax(-1)
            if int(token) == STOP:
                break
            tokens.append(int(token))
        assert greedy[b][0].tokens == tokens


def test_state_in_named_tuples_and_dicts():
    """Projected attention keys (pyseq.functional.ProjectedKeys, a NamedTuple) travel in the state, reordered by beam
    like any tensor, with the decoder's own state in a dict."""
    step = make_decoder(4)
    h0 = torch.randn(2, D, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    keys = pyseq.functional.project_keys(torch.randn(2, 5, 3, dtype=torch.float64))
    seen = []

    def step_with_keys(tokens, state):
        assert isinstance(state["keys"], pyseq.functional.ProjectedKeys)
        seen.append(state["keys"].proj.shape[0])
        log_probs, h = step(tokens, state["h"])
        return log_probs, {"h": h, "keys": state["keys"]}

    got = beam_search(step_with_keys, {"h": h0, "keys": keys}, 2, START, STOP, beam_width=3, max_length=5)
    assert got == beam_search(step, h0, 2, START, STOP, beam_width=3, max_length=5)
    assert set(seen) == {2 * 3}


def test_bad_arguments():
    step = make_decoder(0)
    with pytest.raises(ValueError, match="nbest <= beam_width"):
        beam_search(step, torch.zeros(1, D), 1, START, STOP, beam_width=2, nbest=3)
    with pytest.raises(TypeError, match="decoder state must be tensors"):
        beam_search(step, "state", 1, START, STOP)
    assert dir(pyseq.seq2seq) == ["Hypothesis", "beam_search"]
