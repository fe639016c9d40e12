"""Every public function's results on a fixed set of inputs, recorded once and compared bit for bit later.

A change that must not alter behaviour (a refactor of the op plumbing, a build change) records the results before
and compares after:

    python tools/check_behaviour.py record /tmp/before.pt     # on the old build
    python tools/check_behaviour.py compare /tmp/before.pt    # on the new build: exit status 1 on any difference

Each case runs a public function or module forward, and backward where it is differentiable, in float64, float32
and (where the family takes it) bfloat16, with gradients enabled and under torch.no_grad(). In the emulation build
(``make cuda-emulate``) every case also runs through the emulated CUDA kernels. Results must be equal in every bit
(NaNs included); tolerances have no place in this check.
"""

from __future__ import annotations

import contextlib
import sys

import torch

import pyseq
import pyseq.functional as F
from pyseq import cuda_emulation


def _inputs(seed, *shapes, dtype, grad=True):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator, dtype=torch.float64).to(dtype).requires_grad_(grad) for s in shapes]


def _run(fn, inputs, *, backward=True):
    """fn(*inputs) -> tensor or tuple; its results, and with backward the gradients of inputs for sum(result * w)."""
    out = fn(*inputs)
    outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor)]
    results = [o.detach().clone() for o in outs]
    differentiable = [o for o in outs if o.requires_grad]
    if backward and differentiable:
        weights = [torch.linspace(-1, 1, o.numel(), dtype=torch.float64).reshape(o.shape).to(o.dtype)
                   for o in differentiable]
        loss = sum((o * w).sum() for o, w in zip(differentiable, weights))
        wanted = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
        grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        results += [g if g is not None else torch.zeros(0) for g in grads]
    return results


def _rnn_cases(dtype):
    cases = {}
    for name, gates in (("lstm", 4), ("gru", 3), ("rnn", 1)):
        def case(name=name, gates=gates, bidirectional=False, T=5, B=3, batch_first=False):
            I, H, layers = 4, 6, 2
            directions = 2 if bidirectional else 1
            shapes = []
            for layer in range(layers):
                for _ in range(directions):
                    size = I if layer == 0 else H * directions
                    shapes += [(gates * H, size), (gates * H, H), (gates * H,), (gates * H,)]
            x, h0, c0, *weights = _inputs(len(shapes) + T, (B, T, I) if batch_first else (T, B, I),
                                          (layers * directions, B, H), (layers * directions, B, H), *shapes,
                                          dtype=dtype)
            fn = getattr(F, name)

            def call(x, h0, c0, *weights):
                hx = (h0, c0) if name == "lstm" else h0
                return fn(x, hx, list(weights), num_layers=layers, bidirectional=bidirectional,
                          batch_first=batch_first)

            inputs = [x, h0, c0, *weights] if name == "lstm" else [x, h0, c0.detach(), *weights]
            return call, inputs
        cases[f"{name}"] = case
        cases[f"{name}_bidirectional_batch_first"] = (
            lambda case=case: case(bidirectional=True, batch_first=True))
        cases[f"{name}_one_step"] = lambda case=case: case(T=1, B=1)

    def packed():
        module = pyseq.nn.LSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3).to(dtype)
        torch.manual_seed(0)
        for p in module.parameters():
            torch.nn.init.uniform_(p, -0.5, 0.5)
        x, = _inputs(7, (6, 3, 4), dtype=dtype)

        def call(x, *params):
            seq = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([6, 4, 1]), enforce_sorted=False)
            y, (h, c) = module(seq)
            return y.data, h, c
        return call, [x, *module.parameters()]
    cases["lstm_packed_projected"] = packed
    return cases


def _ctc_cases(dtype):
    def loss(reduction="mean", T=12, N=4, C=6):
        lp, = _inputs(1, (T, N, C), dtype=dtype)
        generator = torch.Generator().manual_seed(2)
        targets = torch.randint(1, C, (N, 4), generator=generator)
        target_lengths = torch.tensor([4, 0, 3, 2][:N])
        input_lengths = torch.tensor([T, T - 3, 5, 1][:N])

        def call(lp):
            return F.ctc_loss(lp.log_softmax(-1), targets, input_lengths, target_lengths, reduction=reduction,
                              zero_infinity=True)
        return call, [lp]

    def decode():
        lp, = _inputs(3, (9, 2, 5), dtype=dtype, grad=False)
        lp = lp.log_softmax(-1)

        def call(lp):
            tokens, counts = pyseq.ctc.greedy_decode(lp, padded=True)
            labels, scores = pyseq.ctc.forced_align(lp, torch.tensor([[1, 2], [3, 3]]), None, torch.tensor([2, 2]))
            beams = pyseq.ctc.beam_search(lp.float() if lp.dtype == torch.bfloat16 else lp, beam_width=4, nbest=2)
            beam_scores = torch.tensor([[h.score for h in b] for b in beams], dtype=torch.float64)
            beam_tokens = torch.tensor([t for b in beams for h in b for t in h.tokens + [-1]])
            return tokens, counts, labels, scores, beam_scores, beam_tokens
        return call, [lp]
    return {"ctc_loss_mean": loss, "ctc_loss_none": lambda: loss("none"), "ctc_loss_sum": lambda: loss("sum"),
            "ctc_decode_align_beam": decode}


def _crf_cases(dtype):
    def inputs(T=7, B=3, K=5):
        emissions, transitions, start, end = _inputs(4, (B, T, K), (K, K), (K,), (K,), dtype=dtype)
        tags = torch.randint(0, K, (B, T), generator=torch.Generator().manual_seed(5))
        return emissions, transitions, start, end, tags, torch.tensor([T, 3, 0][:B])

    cases = {}
    for name in ("crf_log_partition", "crf_marginals", "crf_viterbi"):
        def case(name=name):
            emissions, transitions, start, end, tags, lengths = inputs()
            return (lambda *a: getattr(F, name)(*a, lengths=lengths)), [emissions, transitions, start, end]
        cases[name] = case
    for name in ("crf_score", "crf_log_likelihood", "crf_hinge_loss"):
        def case(name=name):
            emissions, transitions, start, end, tags, lengths = inputs()
            return ((lambda e, t, s, n: getattr(F, name)(e, tags, t, s, n, lengths=lengths)),
                    [emissions, transitions, start, end])
        cases[name] = case

    def nbest():
        emissions, transitions, start, end, tags, lengths = inputs()
        return (lambda *a: F.crf_viterbi(*a, lengths=lengths, nbest=3)), [emissions, transitions, start, end]
    cases["crf_viterbi_nbest"] = nbest

    def hmm():
        emissions, transitions, start, end, tags, lengths = inputs()
        return (lambda *a: F.hmm_viterbi(*a, lengths=lengths)), [emissions, transitions, start, end]
    cases["hmm_viterbi"] = hmm

    def module():
        crf = pyseq.nn.CRF(5, batch_first=True).to(dtype)
        emissions, transitions, start, end, tags, lengths = inputs()
        with torch.no_grad():
            crf.transitions.copy_(transitions)
            crf.start_transitions.copy_(start)
            crf.end_transitions.copy_(end)
        mask = torch.arange(7).unsqueeze(0) < torch.tensor([7, 3, 1]).unsqueeze(1)
        e = emissions.detach().clone().requires_grad_()

        def call(e, *params):
            decoded = crf.decode(e, mask=mask)
            return crf(e, tags, mask=mask), torch.tensor([t for d in decoded for t in d + [-1]])
        return call, [e, *crf.parameters()]
    cases["crf_module"] = module
    return cases


def _attention_cases(dtype):
    def additive(masked=True, projected=False):
        q, k, v, value = _inputs(6, (3, 4, 8), (3, 9, 8), (8,), (3, 9, 5), dtype=dtype)
        mask = torch.arange(9).unsqueeze(0) < torch.tensor([9, 4, 1]).unsqueeze(1) if masked else None

        def call(q, k, v, value):
            keys = F.project_keys(k) if projected else k
            return F.additive_attention(q, keys, v, value, mask=mask, return_weights=True)
        return call, [q, k, v, value]

    def dot(masked=True):
        q, k, value = _inputs(7, (3, 4, 8), (3, 9, 8), (3, 9, 5), dtype=dtype)
        mask = torch.arange(9).unsqueeze(0) < torch.tensor([9, 4, 1]).unsqueeze(1) if masked else None
        return (lambda *a: F.dot_attention(*a, mask=mask, return_weights=True)), [q, k, value]

    def modules():
        torch.manual_seed(3)
        additive_module = pyseq.nn.AdditiveAttention(6, 7, 8).to(dtype)
        general = pyseq.nn.DotAttention(6, 7, score="general").to(dtype)
        location = pyseq.nn.LocationAwareAttention(6, 7, 8, channels=4, kernel_size=5).to(dtype)
        q, k = _inputs(8, (2, 6), (2, 9, 7), dtype=dtype)
        params = [*additive_module.parameters(), *general.parameters(), *location.parameters()]

        def call(q, k, *params):
            a = additive_module(q, k)
            g = general(q, k)
            loc = location(q, k, torch.full((2, 9), 1 / 9, dtype=dtype))
            return (*a, *g, *loc)
        return call, [q, k, *params]
    return {"additive_attention": additive, "additive_attention_unmasked": lambda: additive(masked=False),
            "additive_attention_projected": lambda: additive(projected=True), "dot_attention": dot,
            "dot_attention_unmasked": lambda: dot(masked=False), "attention_modules": modules}


def _ntm_cases(dtype):
    def address():
        memory, key, beta, gate, shift, gamma, prev = _inputs(9, (2, 10, 4), (2, 2, 4), (2, 2), (2, 2), (2, 2, 3),
                                                              (2, 2), (2, 2, 10), dtype=dtype)

        def call(memory, key, beta, gate, shift, gamma, prev):
            weights = F.ntm_address(memory, key, beta.exp(), gate.sigmoid(), shift.softmax(-1), 1 + gamma.exp(),
                                    prev.softmax(-1))
            erase, add = torch.sigmoid(key[:, 0]), key[:, 1].tanh()
            return weights, F.ntm_read(memory, weights), F.ntm_write(memory, weights[:, 0], erase, add)
        return call, [memory, key, beta, gate, shift, gamma, prev]

    def step():
        memory, params, prev = _inputs(10, (2, 10, 4), (2, 3 * (4 + 6) + 2 * 4), (2, 3, 10), dtype=dtype)

        def call(memory, params, prev):
            return F.ntm_step(memory, params, prev.softmax(-1), 2, 1)
        return call, [memory, params, prev]

    def module():
        torch.manual_seed(4)
        ntm = pyseq.nn.NTM(3, 2, 8, memory_size=(6, 4), read_heads=2).to(dtype)
        x, = _inputs(11, (5, 2, 3), dtype=dtype)
        return (lambda x, *params: ntm(x)[0]), [x, *ntm.parameters()]
    return {"ntm_address_read_write": address, "ntm_step": step, "ntm_module": module}


def _memnet_cases(dtype):
    def bags_and_hops(per_hop=True):
        g = torch.Generator().manual_seed(12)
        indices, lengths = torch.randint(0, 9, (2, 5, 4), generator=g), torch.randint(0, 5, (2, 5), generator=g)
        table, weights, u, H = _inputs(13, (9, 6), (4, 6), (2, 6), (6, 6), dtype=dtype)

        def call(table, weights, u, H):
            memories = F.position_encoded_bag(indices, weights, lengths, table=table)
            stacked = torch.stack([memories, memories * 0.5, memories.flip(1)])
            memory_in, memory_out = (stacked[:-1], stacked[1:]) if per_hop else (memories, stacked[1])
            return F.memory_hops(u, memory_in, memory_out, lengths > 0, 2, None if per_hop else H)
        return call, [table, weights, u, H]

    def module():
        torch.manual_seed(5)
        net = pyseq.nn.MemoryNetwork(9, 6, max_sentences=5, hops=3).to(dtype)
        story = torch.randint(0, 9, (2, 5, 4), generator=torch.Generator().manual_seed(14))
        question = torch.randint(1, 9, (2, 3), generator=torch.Generator().manual_seed(15))
        return (lambda *params: net(story, question)), list(net.parameters())
    return {"memnet_adjacent": bags_and_hops, "memnet_layerwise": lambda: bags_and_hops(False),
            "memnet_module": module}


FAMILIES = (_rnn_cases, _ctc_cases, _crf_cases, _attention_cases, _ntm_cases, _memnet_cases)


def results() -> dict[str, list[torch.Tensor]]:
    everything = {}
    modes = [("", None)]
    if cuda_emulation.available():
        modes.append(("emulated:", cuda_emulation.emulate))
    for prefix, mode in modes:
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            for family in FAMILIES:
                for name, make in family(dtype).items():
                    if dtype == torch.bfloat16 and "module" in name:
                        continue
                    key = f"{prefix}{name}:{str(dtype)[6:]}"
                    fn, inputs = make()
                    with mode() if mode else contextlib.nullcontext():
                        everything[key] = _run(fn, inputs)
                        with torch.no_grad():
                            everything[key + ":no_grad"] = _run(fn, inputs, backward=False)
                    if name in ("ctc_loss_mean", "crf_log_likelihood", "dot_attention", "lstm_one_step") and (
                            dtype == torch.float64 and not mode):
                        out = fn(*inputs)
                        out = out[0] if isinstance(out, (tuple, list)) else out
                        wanted = [x for x in inputs if x.requires_grad]
                        first = torch.autograd.grad(out.sum(), wanted, create_graph=True, allow_unused=True)
                        total = sum((g * g).sum() for g in first if g is not None)
                        everything[key + ":double_backward"] = [
                            g if g is not None else torch.zeros(0)
                            for g in torch.autograd.grad(total, wanted, allow_unused=True)]
    return everything


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():  # bit patterns, so that NaNs compare too
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.contiguous().view(bits), b.contiguous().view(bits)
    return torch.equal(a, b)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("record", "compare"):
        print(__doc__)
        return 2
    torch.use_deterministic_algorithms(True)
    now = results()
    if argv[1] == "record":
        torch.save(now, argv[2])
        print(f"recorded {len(now)} cases ({sum(len(v) for v in now.values())} tensors) in {argv[2]}")
        return 0
    before = torch.load(argv[2])
    differ = [k for k in before if k in now and (len(before[k]) != len(now[k]) or
                                                 not all(_same(a, b) for a, b in zip(before[k], now[k])))]
    missing = sorted(set(before) ^ set(now))
    for k in differ:
        print("differs:", k)
    for k in missing:
        print("only in one of the two:", k)
    print(f"{len(before)} cases recorded, {len(now)} now: {len(differ)} differ, {len(missing)} in only one")
    return 1 if differ or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
