"""NTM memory measurements, float32: a T-step loop of one read head and one write head over an N x M memory (each step
addresses both heads, reads, then writes) through pyseq's fused ops, against the same loop written as the paper's
equations in torch ops (cosine similarity, softmax, interpolation, a torch.roll per shift, sharpening, erase and add:
the dozen small ops per head per step of the usual implementations); forward, and forward+backward of the reads. And
the whole pyseq.nn.NTM layer (LSTM controller, one read and one write head), forward+backward, against the same layer
with the memory ops replaced by that composition."""

from __future__ import annotations

import dataclasses
import types

import torch
import torch.nn.functional as TF

import pyseq

from harness import comparison, time_pair

# (T, B, N, M): the size.
SIZES = [(40, 16, 128, 20)]


@dataclasses.dataclass
class Case:
    T: int
    B: int
    N: int
    M: int

    @property
    def label(self) -> str:
        return f"NTM read/write loop T={self.T} B={self.B} N={self.N} M={self.M}"


def composed_address(memory, key, beta, gate, shift, gamma, prev):
    r = (shift.shape[2] - 1) // 2
    similarity = TF.cosine_similarity(key.unsqueeze(2), memory.unsqueeze(1), dim=3, eps=1e-8)
    content = torch.softmax(beta.unsqueeze(2) * similarity, dim=2)
    gated = gate.unsqueeze(2) * content + (1 - gate.unsqueeze(2)) * prev
    shifted = sum(shift[:, :, s : s + 1] * torch.roll(gated, s - r, dims=2) for s in range(shift.shape[2]))
    sharpened = shifted ** gamma.unsqueeze(2)
    return sharpened / sharpened.sum(2, keepdim=True)


def composed_write(memory, weights, erase, add):
    return memory * (1 - weights.unsqueeze(2) * erase.unsqueeze(1)) + weights.unsqueeze(2) * add.unsqueeze(1)


def composed_step(memory, params, prev, R, W):
    """pyseq.functional.ntm_step as the usual implementations write a step of the heads: activations, then the
    composition above, reads by bmm, the writes in turn."""
    B, N, M = memory.shape
    heads = R + W
    A = (params.shape[1] - W * 2 * M) // heads
    key, beta, gate, gamma, shift = params[:, : heads * A].reshape(B, heads, A).split([M, 1, 1, 1, A - M - 3], dim=2)
    weights = composed_address(memory, key, TF.softplus(beta[..., 0]), torch.sigmoid(gate[..., 0]),
                               torch.softmax(shift, 2), 1 + TF.softplus(gamma[..., 0]), prev)
    ea = params[:, heads * A :].reshape(B, W, 2, M)
    written = memory
    for w in range(W):
        written = composed_write(written, weights[:, R + w], torch.sigmoid(ea[:, w, 0]), torch.tanh(ea[:, w, 1]))
    return weights, torch.bmm(weights[:, :R], memory), written


FUSED = (pyseq.functional.ntm_address, pyseq.functional.ntm_write)
COMPOSED = (composed_address, composed_write)


def build(case: Case, seed: int = 0):
    """Per-step head parameters [T, B, 2 heads, ...] as a controller would emit them, the initial memory and weights."""
    g = torch.Generator().manual_seed(seed)
    T, B, N, M = case.T, case.B, case.N, case.M

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "memory": randn(B, N, M) * 0.1, "prev": torch.softmax(randn(B, 2, N), -1),
        "key": randn(T, B, 2, M), "beta": TF.softplus(randn(T, B, 2)), "gate": torch.sigmoid(randn(T, B, 2)),
        "shift": torch.softmax(randn(T, B, 2, 3), -1), "gamma": 1 + TF.softplus(randn(T, B, 2)),
        "erase": torch.sigmoid(randn(T, B, M)), "add": randn(T, B, M),
    }


def loop(ops, x) -> torch.Tensor:
    """The T steps; returns the reads [T, B, M]."""
    address, write = ops
    memory, weights, reads = x["memory"], x["prev"], []
    for t in range(x["key"].shape[0]):
        weights = address(memory, x["key"][t], x["beta"][t], x["gate"][t], x["shift"][t], x["gamma"][t], weights)
        reads.append(pyseq.functional.ntm_read(memory, weights[:, :1])[:, 0])  # head 0 reads
        memory = write(memory, weights[:, 1], x["erase"][t], x["add"][t])  # head 1 writes
    return torch.stack(reads)


def run_fn(ops, inputs: dict, backward: bool):
    if not backward:
        def run():
            with torch.no_grad():
                loop(ops, inputs)
        return run
    xs = {k: v.clone().requires_grad_() for k, v in inputs.items()}

    def run():
        for v in xs.values():
            v.grad = None
        loop(ops, xs).sum().backward()

    return run


def check(inputs: dict) -> None:
    """Same reads and gradients (float32 tolerance)."""
    results = []
    for ops in (FUSED, COMPOSED):
        xs = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        reads = loop(ops, xs)
        results.append([reads] + list(torch.autograd.grad(reads.square().sum(), list(xs.values()))))
    for a, b in zip(*results):
        err = (a - b).abs().max().item()
        assert err <= 1e-3 * max(1.0, b.abs().max().item()), f"pyseq differs from the composition by {err}"


def measure(case: Case, backward: bool, budget_s: float = 1.0) -> dict:
    inputs = build(case)
    check(inputs)
    t_ours, t_ref = time_pair(run_fn(FUSED, inputs, backward), run_fn(COMPOSED, inputs, backward), budget_s=budget_s)
    return comparison(case.label, "fwd+bwd" if backward else "fwd", t_ours, t_ref)


def all_cases():
    return [Case(*size) for size in SIZES]


def measure_layer(case: Case, budget_s: float = 1.0) -> dict:
    """pyseq.nn.NTM (controller 100, input and output 8) forward+backward over T steps, with pyseq's fused step of the
    heads (pyseq.functional.ntm_step) and with the composition in its place (composed_step, through the layer
    module's `F`, swapped for the reference run): the layer as the usual implementations write it, on the same
    controller."""
    import pyseq.nn.ntm as layer_module

    torch.manual_seed(0)
    ntm = pyseq.nn.NTM(8, 8, 100, memory_size=(case.N, case.M))
    x = torch.randn(case.T, case.B, 8)
    composed = types.SimpleNamespace(ntm_step=composed_step)

    def run_with(functions):
        def run():
            saved, layer_module.F = layer_module.F, functions
            try:
                ntm.zero_grad(set_to_none=True)
                out, _ = ntm(x)
                out.square().sum().backward()
            finally:
                layer_module.F = saved
            return out.detach(), [p.grad for p in ntm.parameters()]
        return run

    ours, ref = run_with(pyseq.functional), run_with(composed)
    for a, b in zip([ours()[0]] + ours()[1], [ref()[0]] + ref()[1]):
        err = (a - b).abs().max().item()
        assert err <= 1e-3 * max(1.0, b.abs().max().item()), f"the layers differ by {err}"
    t_ours, t_ref = time_pair(ours, ref, budget_s=budget_s)
    return comparison(f"NTM layer T={case.T} B={case.B} N={case.N} M={case.M} controller=100", "fwd+bwd", t_ours, t_ref)
