"""Memory-network ops and pyseq.nn.MemoryNetwork against the paper's equations as plain torch ops (Sukhbaatar et al.
2015): the position-encoded bags (section 4.1) and the hops (section 2), values and gradients in float64 and
float32, odd sizes, masks that keep no sentence, per-hop and shared memories, with and without H; gradcheck,
gradgradcheck, opcheck, compile, bad input. The op tests take the `device` fixture: CUDA where there is a GPU, and
the emulated CUDA kernels in the emulation build."""

import pytest
import torch

import pyseq
from pyseq import functional as F


def reference_position_encoding(J, d):
    """l_kj = (1 - j/J) - (k/d)(1 - 2j/J), j = 1..J, k = 1..d, as the paper writes it, element by element."""
    return torch.tensor([[(1 - j / J) - (k / d) * (1 - 2 * j / J) for k in range(1, d + 1)] for j in range(1, J + 1)],
                        dtype=torch.float64)


def reference_bag(table, indices, weights, lengths):
    """sum_j l_j * A x_ij over the words of each sentence, one sentence at a time."""
    out = []
    for row, n in zip(indices.reshape(-1, indices.shape[-1]), lengths.reshape(-1).tolist()):
        terms = [weights[j] * table[row[j]] for j in range(n)]
        out.append(torch.stack(terms).sum(0) if terms else table.new_zeros(table.shape[1]))
    return (torch.stack(out) if out else table.new_zeros(0, table.shape[1])).view(*indices.shape[:-1], table.shape[1])


def reference_hops(u, memory_in, memory_out, mask, hops, H, softmax=True):
    """p_i = softmax(u^T m_i) (or u^T m_i itself), o = sum_i p_i c_i, u' = H u + o, per batch entry over its kept
    sentences."""
    states, weights = [u], []
    for k in range(hops):
        m = memory_in[k] if memory_in.dim() == 4 else memory_in
        c = memory_out[k] if memory_out.dim() == 4 else memory_out
        new_u, ps = [], []
        for b in range(u.shape[0]):
            keep = mask[b] if mask is not None else torch.ones(m.shape[1], dtype=torch.bool)
            p = torch.zeros(m.shape[1], dtype=u.dtype)
            if keep.any():
                scores = m[b][keep] @ states[-1][b]
                p = p.index_put((keep.nonzero().squeeze(1),), torch.softmax(scores, 0) if softmax else scores)
            o = p @ c[b]
            new_u.append((H @ states[-1][b] if H is not None else states[-1][b]) + o)
            ps.append(p)
        states.append(torch.stack(new_u))
        weights.append(torch.stack(ps))
    return states[-1], torch.stack(weights)


def random_story(B, S, W, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, V, (B, S, W), generator=g)
    lengths = torch.randint(0, W + 1, (B, S), generator=g)
    return indices, lengths


def values_and_grads(fn, inputs, device):
    xs = [x.detach().to(device).requires_grad_() if x is not None and x.is_floating_point() else
          (x.to(device) if x is not None else None) for x in inputs]
    out = fn(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(5)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype).to(device)).sum() for o in outs)
    wanted = [x for x in xs if x is not None and x.requires_grad]
    grads = torch.autograd.grad(loss, wanted, allow_unused=True, materialize_grads=True) if loss.requires_grad else \
        [torch.zeros_like(x) for x in wanted]
    return [o.detach().cpu() for o in outs] + [g.cpu() for g in grads]


def assert_all_close(got, expected, **tolerance):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b.to(a.dtype), **tolerance)


def test_position_encoding_is_the_papers():
    for J, d in ((1, 1), (6, 4), (12, 20)):
        torch.testing.assert_close(F.position_encoding(J, d, dtype=torch.float64), reference_position_encoding(J, d))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,S,W,V,D", [(2, 3, 4, 7, 5), (1, 1, 1, 1, 1), (3, 5, 12, 20, 33), (2, 0, 3, 4, 2),
                                       (1, 6, 2, 3, 129)])
def test_bag_matches_the_equation(device, dtype, B, S, W, V, D):
    indices, lengths = random_story(B, S, W, V, seed=B + S)
    g = torch.Generator().manual_seed(1)
    table = torch.randn(V, D, generator=g, dtype=torch.float64)
    weights = torch.randn(W, D, generator=g, dtype=torch.float64)
    expected = values_and_grads(lambda t, w: reference_bag(t, indices, w, lengths), [table, weights], "cpu")
    got = values_and_grads(lambda i, t, w, n: F.position_encoded_bag(i, w, n, table=t),
                           [indices, table.to(dtype), weights.to(dtype), lengths], device)
    assert_all_close(got, expected, **({} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}))


def test_bag_of_word_vectors_and_default_lengths(device):
    words = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    weights = torch.randn(4, 5, dtype=torch.float64)
    expected = (words * weights).sum(2)
    got = values_and_grads(lambda x, w: F.position_encoded_bag(x, w), [words, weights], device)
    assert_all_close(got, values_and_grads(lambda x, w: (x * w).sum(2), [words, weights], "cpu"))
    torch.testing.assert_close(got[0], expected)


def test_bag_repeated_words_sum_their_gradients_deterministically(device):
    indices = torch.zeros(50, 6, dtype=torch.int64)  # every position holds word 0
    lengths = torch.full((50,), 6)
    table, weights = torch.randn(3, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    first = values_and_grads(lambda t, w: F.position_encoded_bag(indices.to(t.device), w, lengths.to(t.device),
                                                                 table=t), [table, weights], device)
    again = values_and_grads(lambda t, w: F.position_encoded_bag(indices.to(t.device), w, lengths.to(t.device),
                                                                 table=t), [table, weights], device)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    expected = values_and_grads(lambda t, w: reference_bag(t, indices, w, lengths), [table, weights], "cpu")
    assert_all_close(first, expected)
    assert torch.equal(first[1][1:], torch.zeros(2, 8, dtype=torch.float64))  # unused rows get no gradient


def hop_inputs(B, S, D, K, per_hop, masked, with_h, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (K, B, S, D) if per_hop else (B, S, D)
    u = torch.randn(B, D, generator=g, dtype=dtype)
    memory_in = torch.randn(*shape, generator=g, dtype=dtype) / max(D, 1) ** 0.5
    memory_out = torch.randn(*shape, generator=g, dtype=dtype)
    mask = None
    if masked:
        mask = torch.rand(B, S, generator=g) < 0.7
        mask[0] = False  # an entry with no sentence
    H = torch.randn(D, D, generator=g, dtype=dtype) / max(D, 1) ** 0.5 if with_h else None
    return u, memory_in, memory_out, mask, H


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,S,D,K", [(2, 5, 4, 3), (1, 1, 1, 1), (3, 50, 64, 3), (2, 7, 33, 2), (2, 0, 3, 2),
                                     (1, 300, 5, 1)])
@pytest.mark.parametrize("per_hop", [False, True])
@pytest.mark.parametrize("masked,with_h,softmax", [(False, False, True), (True, True, True), (True, False, True),
                                                  (True, True, False), (False, False, False)])
def test_hops_match_the_equations(device, dtype, B, S, D, K, per_hop, masked, with_h, softmax):
    u, memory_in, memory_out, mask, H = hop_inputs(B, S, D, K, per_hop, masked, with_h, seed=S + D)
    expected = values_and_grads(
        lambda *x: reference_hops(x[0], x[1], x[2], mask, K, x[3] if with_h else None, softmax),
        [u, memory_in, memory_out] + ([H] if with_h else []), "cpu")

    def hops(*x):
        return F.memory_hops(x[0], x[1], x[2], mask.to(x[0].device) if mask is not None else None, K,
                             x[3] if with_h else None, softmax)

    got = values_and_grads(hops, [t.to(dtype) for t in [u, memory_in, memory_out] + ([H] if with_h else [])], device)
    if dtype == torch.float64:
        assert_all_close(got, expected)
    else:  # float32 rounding, relative to each tensor's scale (linear hops multiply the scores' magnitudes)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b.float(), rtol=2e-5, atol=2e-5 * max([1.0, *b.abs().flatten().tolist()]))


def test_hops_gradient_reaches_every_state(device):
    """The op returns every hop's state: a loss on the middle ones reaches u and the memories through them."""
    u, memory_in, memory_out, mask, H = hop_inputs(2, 4, 3, 3, True, True, True)

    def middle(u, m_in, m_out, h):
        states, weights = pyseq._ops.memnet.memory_hops(u, m_in, m_out, mask.to(u.device), 3, h, True)
        return states[1] * 2 + states[2], weights

    def reference(u, m_in, m_out, h):
        states = [u]
        for k in range(3):
            states.append(reference_hops(states[-1], m_in[k:k + 1], m_out[k:k + 1], mask, 1, h)[0])
        return states[1] * 2 + states[2], reference_hops(u, m_in, m_out, mask, 3, h)[1]

    assert_all_close(values_and_grads(middle, [u, memory_in, memory_out, H], device),
                     values_and_grads(reference, [u, memory_in, memory_out, H], "cpu"))


def test_gradcheck_and_gradgradcheck():
    indices, lengths = random_story(2, 3, 4, 5, seed=3)
    table = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    bag = lambda t, w: F.position_encoded_bag(indices, w, lengths, table=t)  # noqa: E731
    assert torch.autograd.gradcheck(bag, (table, weights))
    assert torch.autograd.gradgradcheck(bag, (table, weights))
    u, memory_in, memory_out, mask, H = (t.requires_grad_() if t is not None and t.is_floating_point() else t
                                         for t in hop_inputs(2, 4, 3, 2, True, True, True))
    for softmax in (True, False):
        hops = lambda u, i, o, h: F.memory_hops(u, i, o, mask, 2, h, softmax)  # noqa: E731
        assert torch.autograd.gradcheck(hops, (u, memory_in, memory_out, H))
        assert torch.autograd.gradgradcheck(hops, (u, memory_in, memory_out, H))


def test_opcheck_with_non_contiguous_inputs():
    opcheck = torch.library.opcheck
    ops = torch.ops.pyseq
    indices, lengths = random_story(3, 2, 5, 6, seed=4)
    rows, lens = indices.reshape(-1, 5), lengths.reshape(-1)
    table = torch.randn(4, 6, dtype=torch.float64).t().requires_grad_()  # [6, 4], transposed
    weights = torch.randn(5, 8, dtype=torch.float64)[:, ::2].requires_grad_()
    opcheck(ops.position_encoded_bag.default, (table, rows, weights, lens))
    opcheck(ops.position_encoded_bag_backward.default, (torch.randn(6, 4, dtype=torch.float64), table.detach(), rows,
                                                        weights.detach(), lens))
    u, memory_in, memory_out, mask, H = hop_inputs(3, 4, 5, 2, True, True, True)
    args = (u.t().contiguous().t().requires_grad_(), memory_in.transpose(2, 3).contiguous().transpose(2, 3),
            memory_out.clone().requires_grad_(), mask, 2, H.t().requires_grad_(), True)
    opcheck(ops.memory_hops.default, args)
    states, weights_ = ops.memory_hops(*args)
    opcheck(ops.memory_hops_backward.default, (torch.randn_like(states), torch.randn_like(weights_), memory_in,
                                               memory_out, mask, H.t(), states.detach(), weights_.detach(), True))
    opcheck(ops.memory_hops.default, (u, memory_in[0], memory_out[0], None, 3, None, False))


def test_no_grad_and_16_bit(device):
    u, memory_in, memory_out, mask, H = hop_inputs(2, 5, 8, 2, False, True, False, dtype=torch.float32)
    with torch.no_grad():
        plain, plain_weights = F.memory_hops(u, memory_in, memory_out, mask, 2)
    reference, reference_weights = reference_hops(u, memory_in, memory_out, mask, 2, None)
    torch.testing.assert_close(plain, reference)
    out, weights = F.memory_hops(u.bfloat16(), memory_in.bfloat16(), memory_out.bfloat16(), mask, 2)
    assert out.dtype == weights.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)


def reference_memory_network(net, story, question):
    """The model of the paper's section 2 with the module's parameters, as torch ops: adjacent tying. Returns the
    logits, the hops' weights and the question's embedding u."""
    E, T = net.embeddings.detach().double(), net.temporal.detach().double()
    K, (_, S, W), d = net.hops, story.shape, net.embedding_dim
    lengths = (story != 0).sum(-1)
    mask = lengths > 0
    J = max(W, question.shape[1])  # one encoding for the sentences and the question
    l_story, l_question = reference_position_encoding(J, d)[:W], reference_position_encoding(J, d)[: question.shape[1]]
    age = (mask.sum(1, keepdim=True) - 1 - torch.arange(S)).clamp_min(0)
    memories = [reference_bag(E[k], story, l_story, lengths) + T[k][age] for k in range(K + 1)]
    u = reference_bag(E[0], question.unsqueeze(1), l_question, (question != 0).sum(-1, keepdim=True)).squeeze(1)
    u_K, weights = reference_hops(u, torch.stack(memories[:-1]), torch.stack(memories[1:]), mask, K, None)
    return u_K @ E[K].t(), weights, u


def test_memory_network_matches_the_paper_and_trains():
    torch.manual_seed(0)
    net = pyseq.nn.MemoryNetwork(11, 6, max_sentences=5, hops=3).double()
    story = torch.tensor([[[1, 2, 3, 0], [4, 5, 0, 0], [0, 0, 0, 0]], [[6, 7, 8, 9], [10, 1, 0, 0], [2, 3, 4, 0]]])
    question = torch.tensor([[1, 5, 0], [7, 8, 9]])
    logits, weights = net(story, question)
    expected_logits, expected_weights, expected_u = reference_memory_network(net, story, question)
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(weights, expected_weights)
    u, u_K, read_weights = net.read(story, question)  # the hops without the answer layer
    torch.testing.assert_close(u, expected_u)
    torch.testing.assert_close(u_K @ net.embeddings[-1].t(), expected_logits)
    torch.testing.assert_close(read_weights, expected_weights)
    assert weights[:, 0, 2].abs().max() == 0  # the padding sentence is never read
    # Learns a lookup: the answer is the first word of the latest sentence.
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    answer = torch.tensor([4, 2])
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(story, question)[0], answer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert net(story, question)[0].argmax(1).tolist() == [4, 2]


def test_layerwise_memory_network_compiles_without_graph_breaks():
    torch.manual_seed(1)
    net = pyseq.nn.MemoryNetwork(9, 4, max_sentences=4, hops=2, tying="layerwise", answer_size=3)
    story = torch.randint(0, 9, (2, 4, 5))
    question = torch.randint(1, 9, (2, 3))
    eager = net(story, question)
    compiled = torch.compile(net, fullgraph=True)(story, question)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)
    compiled[0].sum().backward()
    assert net.H.grad is not None and net.answer.weight.grad is not None


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="must be non-negative"):
        F.position_encoding(-1, 3)
    table, weights = torch.randn(5, 3), torch.randn(4, 3)
    indices, lengths = torch.tensor([[0, 1, 2, 3]]), torch.tensor([4])
    with pytest.raises(IndexError, match=r"indices must be in \[0, 4\]"):
        F.position_encoded_bag(indices + 2, weights, lengths, table=table)
    with pytest.raises(IndexError, match=r"lengths must be in \[0, 4\]"):
        F.position_encoded_bag(indices, weights, lengths + 1, table=table)
    with pytest.raises(RuntimeError, match=r"weights must have shape \[4, 3\]"):
        F.position_encoded_bag(indices, weights[:3], lengths, table=table)
    with pytest.raises(TypeError, match="words must be int64 indices"):
        F.position_encoded_bag(indices.int(), weights, lengths, table=table)
    u, memory = torch.randn(2, 3), torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="hops must be at least 1"):
        F.memory_hops(u, memory, memory, None, 0)
    with pytest.raises(RuntimeError, match=r"memory_in must have shape \[2, 2, 5, 3\]"):
        F.memory_hops(u, memory.expand(3, 2, 5, 3), memory.expand(3, 2, 5, 3), None, 2)
    with pytest.raises(TypeError, match="mask must be bool"):
        F.memory_hops(u, memory, memory, torch.ones(2, 5), 1)
    with pytest.raises(RuntimeError, match=r"H must have shape \[3, 3\]"):
        F.memory_hops(u, memory, memory, None, 1, torch.randn(2, 3))
    with pytest.raises(ValueError, match="more than max_sentences"):
        pyseq.nn.MemoryNetwork(5, 3, max_sentences=2)(torch.ones(1, 3, 2, dtype=torch.int64),
                                                       torch.ones(1, 2, dtype=torch.int64))
