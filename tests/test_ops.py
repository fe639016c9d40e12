"""The op registry: every pyseq op has a kernel for the CPU, autocast and autograd kernels (a backward op: none),
and, in a build with CUDA sources, a kernel for CUDA; opcheck of every op."""

import pytest
import torch

import pyseq
from pyseq import _C


def pyseq_ops():
    return sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("pyseq::"))


def has_kernel(op, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


def test_every_op_has_a_cpu_kernel():
    ops = pyseq_ops()
    assert "pyseq::rnn_layer" in ops and len(ops) >= 18
    assert [op for op in ops if not has_kernel(op, "CPU")] == []


def test_every_op_has_a_cuda_kernel_where_built_with_cuda():
    if not _C.with_cuda:
        pytest.skip("this build has no CUDA sources")
    assert [op for op in pyseq_ops() if not has_kernel(op, "CUDA")] == []


def test_every_op_has_an_autograd_and_autocast_policy():
    """Every op says what it does under autocast (CPU and CUDA: its family's AutocastOps), and every op but the
    backward ops has an Autograd kernel (decoders register a fallthrough: their results never require grad). A
    backward op is named <op>_backward after its forward op; autograd never records it (double backward
    differentiates the forward's composite instead)."""
    ops = pyseq_ops()
    for key in ("AutocastCPU", "AutocastCUDA"):
        assert [op for op in ops if not has_kernel(op, key)] == [], key
    backward_ops = sorted(op for op in ops if op.endswith("_backward") and op[: -len("_backward")] in ops)
    assert len(backward_ops) >= 10
    assert sorted(op for op in ops if not has_kernel(op, "Autograd")) == backward_ops


def test_fakes_give_the_kernels_strides_for_non_contiguous_inputs():
    """opcheck (its fake-tensor test compares strides) of every op, forward and backward, on transposed and sliced
    inputs: the kernels return contiguous results whatever the inputs' strides, and so must the fakes (inductor
    relies on it)."""
    torch.manual_seed(0)
    ops = torch.ops.pyseq
    opcheck = torch.library.opcheck
    # attention over a batch_first encoder's output, read through a transpose
    B, Tq, Tk, A, Dv = 2, 3, 5, 4, 6
    qp, kp, val = (torch.randn(n, B, d).transpose(0, 1).requires_grad_() for n, d in ((Tq, A), (Tk, A), (Tk, Dv)))
    v = torch.randn(2 * A)[::2].requires_grad_()
    mask = torch.rand(B, Tk, 2)[..., 0] > 0.3
    opcheck(ops.additive_attention.default, (qp, kp, v, val, mask, None, None))
    opcheck(ops.dot_attention.default, (qp, kp, val, mask, 0.5))
    qp, kp, val, v = (t.detach() for t in (qp, kp, val, v))
    ctx, w = ops.additive_attention(qp, kp, v, val, None, None, None)
    opcheck(ops.additive_attention_backward.default, (torch.randn_like(ctx), None, qp, kp, v, val, w, None, None))
    ctx, w = ops.dot_attention(qp, kp, val, None, 0.5)
    opcheck(ops.dot_attention_backward.default, (torch.randn_like(ctx), torch.randn_like(w), qp, kp, val, w, 0.5))
    # CTC on logits.log_softmax(-1).transpose(0, 1)
    T, N, C = 6, 2, 4
    lp = torch.randn(N, T, C).log_softmax(-1).transpose(0, 1)
    targets, lengths, target_lengths = torch.tensor([[1, 2], [3, 3]]), torch.full((N,), T), torch.tensor([2, 1])
    opcheck(ops.ctc_loss.default, (lp.requires_grad_(), targets, lengths, target_lengths, 0))
    lp = lp.detach()
    opcheck(ops.ctc_greedy_decode.default, (lp, lengths, 0))
    opcheck(ops.ctc_forced_align.default, (lp, targets, lengths, target_lengths, 0))
    nll, log_alpha = ops.ctc_loss(lp, targets, lengths, target_lengths, 0)
    opcheck(ops.ctc_loss_backward.default, (torch.ones_like(nll), lp, targets, lengths, target_lengths, nll,
                                            log_alpha, 0))
    # CRF on time-major emissions read batch-major, scores sliced from larger tensors
    K = 3
    em = torch.randn(5, B, K).transpose(0, 1)
    tags, crf_lengths = torch.randint(0, K, (B, 5)), torch.tensor([5, 3])
    start, end, trans = torch.randn(2 * K)[::2], torch.randn(K), torch.randn(K, 2 * K)[:, :K]
    scores = (start, end, trans)
    em_g = em.clone().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()  # non-contiguous leaf
    opcheck(ops.crf_log_partition.default, (em_g, crf_lengths, *scores))
    opcheck(ops.crf_path_score.default, (em_g, tags, crf_lengths, *scores))
    opcheck(ops.crf_log_likelihood.default, (em_g, tags, crf_lengths, *scores))
    opcheck(ops.crf_marginals.default, (em, crf_lengths, *scores))
    opcheck(ops.crf_viterbi.default, (em, crf_lengths, *scores, 2))
    llh, alpha, shift = ops.crf_log_likelihood(em, tags, crf_lengths, *scores)
    opcheck(ops.crf_log_likelihood_backward.default, (torch.ones_like(llh), em, tags, crf_lengths, *scores, llh, alpha,
                                                      shift))
    log_z, alpha, shift = ops.crf_log_partition(em, crf_lengths, *scores)
    opcheck(ops.crf_log_partition_backward.default, (torch.ones_like(log_z), em, crf_lengths, *scores, alpha, shift))
    score = ops.crf_path_score(em, tags, crf_lengths, *scores)
    opcheck(ops.crf_path_score_backward.default, (torch.ones_like(score), em, tags, crf_lengths))
    # a recurrent layer on a batch_first input, transposed to [T, B, I]
    T, B, I, H = 4, 3, 5, 6
    x = torch.randn(B, T, I).transpose(0, 1)
    args = (2, x, torch.full((T,), B), torch.randn(B, H), torch.randn(B, H), torch.randn(4 * H, I),
            torch.randn(4 * H, H), torch.randn(4 * H), torch.randn(4 * H), torch.empty(0), False, True)
    opcheck(ops.rnn_layer.default, args)
    y, h_n, c_n, ws = ops.rnn_layer(*args)
    opcheck(ops.rnn_layer_backward.default, (2, x, args[2], args[5], args[6], args[9], ws, torch.randn_like(y),
                                             torch.randn_like(h_n), torch.randn_like(c_n), False, True, True, True))


@pytest.mark.slow  # ~20 s of inductor compilation on 2 cores; the opcheck test above covers the fakes' strides
def test_inductor_training_on_non_contiguous_inputs():
    """torch.compile (inductor) training of attention over a batch_first GRU's output and CTC on
    log_softmax(-1).transpose(0, 1): the inputs the kernels see are non-contiguous, as in most models."""
    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = pyseq.nn.GRU(6, 8, batch_first=True)
            self.attention = pyseq.nn.AdditiveAttention(8, 8, 5)
            self.out = torch.nn.Linear(8, 5)

        def forward(self, x, queries, targets, input_lengths, target_lengths):
            h, _ = self.gru(x)
            context, _ = self.attention(queries, h)
            log_probs = self.out(h + context.mean(1, keepdim=True)).log_softmax(-1).transpose(0, 1)
            return pyseq.functional.ctc_loss(log_probs, targets, input_lengths, target_lengths)

    model = Model()
    inputs = (torch.randn(3, 7, 6), torch.randn(3, 2, 8), torch.randint(1, 5, (3, 3)), torch.full((3,), 7),
              torch.tensor([3, 2, 1]))
    results = []
    for fn in (torch.compile(model, fullgraph=True), model):
        model.zero_grad()
        loss = fn(*inputs)
        loss.backward()
        results.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
