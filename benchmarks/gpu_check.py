"""The GPU benchmark of `make gpu-check`, one section per family:

- recurrent layers: pyseq's against torch.nn's (cuDNN) on CUDA, forward and forward+backward, T=100, B in {1, 8, 64},
  H in {256, 1024} (input size = H), float32 and bfloat16, one layer; at B <= 16 both forward kernels (the step
  schedule and the persistent kernel, see pyseq.set_cuda_recurrent_kernel);
- CTC: pyseq's loss against F.ctc_loss on CUDA (its native kernel, and cuDNN's where torch takes it: int32
  concatenated targets on the CPU, every input of full length), forward+backward through a log_softmax, at
  (T, N, C, S) = (500, 32, 32, 100), (200, 16, 1000, 50), (1000, 8, 5000, 200); pyseq's gradient checked bitwise
  deterministic;
- CRF: pyseq.nn.CRF's negative log-likelihood forward+backward against pytorch-crf's algorithm written as a plain
  torch composition (the GPU machine cannot install pytorch-crf) at (T, B, K) = (100, 64, 20), (200, 16, 50), and
  Viterbi decoding against the same composition's max-product;
- attention: the CPU benchmark's comparisons (benchmarks/attention_cases.py) on CUDA: additive attention against the
  naive composition (time and peak GPU memory, forward+backward), dot attention with weights against the naive
  composition and without them against scaled_dot_product_attention;
- NTM memory: the CPU benchmark's read/write loop (benchmarks/ntm_cases.py) on CUDA against the paper's equations as
  torch ops, forward and forward+backward.

    python benchmarks/gpu_check.py [--out FILE] [--budget SECONDS] [--quick]

Each case first checks that pyseq agrees with the reference, then times both alternately (CUDA-synchronized,
medians). Each section stops starting new cases when its share of --budget seconds has passed, and says which it
skipped, so that a slow case cannot eat the time of what follows it. The table goes to stdout and, with --out, to
FILE (markdown).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

import pyseq  # noqa: E402
from harness import time_pair  # noqa: E402

CELLS = ["LSTM", "GRU", "RNN"]
BATCHES = [1, 8, 64]
HIDDEN = [256, 1024]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
T = 100


def synchronized(fn):
    def run():
        fn()
        torch.cuda.synchronize()

    return run


def build(cell, B, H, dtype, seed=0):
    torch.manual_seed(seed)
    ours = getattr(pyseq.nn, cell)(H, H).to("cuda", dtype)
    ref = getattr(torch.nn, cell)(H, H).to("cuda", dtype)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, H, device="cuda", dtype=dtype)
    return ours, ref, x


def check(ours, ref, x):
    """Outputs and weight gradients against cuDNN, normwise; float32 to 1e-3 (cuDNN may use TF32-free but
    differently ordered sums over 100 steps), bfloat16 to 5e-2."""
    tol = 1e-3 if x.dtype == torch.float32 else 5e-2
    results = []
    for module in (ours, ref):
        out, _ = module(x)
        out.float().square().mean().backward()
        results.append([out.detach().float()] + [p.grad.float().clone() for p in module.parameters()])
        module.zero_grad()
    for a, b in zip(*results):
        err = (a - b).abs().max().item()
        scale = max(1.0, b.abs().max().item())
        assert err <= tol * scale, f"pyseq differs from cuDNN by {err} (scale {scale})"


def forward_fn(module, x):
    def run():
        with torch.no_grad():
            module(x)

    return synchronized(run)


def train_fn(module, x):
    def run():
        out, _ = module(x)
        out.sum().backward()

    return synchronized(run)


def rnn_section(budget_s, quick):
    """Rows (case, pass, pyseq ms, reference ms, ratio) of the recurrent layers, and the cases skipped."""
    batches, hidden = ([8], [256]) if quick else (BATCHES, HIDDEN)
    per_side = 0.05 if quick else 0.25
    start = time.monotonic()
    rows, skipped = [], []
    cases = [(c, d, b, h) for d in DTYPES for c in CELLS for h in hidden for b in batches]
    for cell, dname, B, H in cases:
        label = f"{cell} {dname} T={T} B={B} H={H} (vs cuDNN)"
        if time.monotonic() - start > budget_s:
            skipped.append(label)
            continue
        ours, ref, x = build(cell, B, H, DTYPES[dname])
        try:
            check(ours, ref, x)
        except AssertionError as e:
            rows.append((label, "check", float("nan"), float("nan"), f"FAILED: {e}"))
            print(rows[-1], flush=True)
            continue
        # The persistent forward kernel (opt-in, batch <= 16) is measured beside the default step schedule.
        kernels = ["steps", "persistent"] if B <= 16 else ["steps"]
        for kernel in kernels:
            pyseq.set_cuda_recurrent_kernel(kernel)
            try:
                if kernel != "steps":
                    check(ours, ref, x)
                for pass_name, make in (("forward", forward_fn), ("fwd+bwd", train_fn)):
                    t_ours, t_ref = time_pair(make(ours, x), make(ref, x), budget_s=per_side)
                    rows.append((label, f"{pass_name} ({kernel})", t_ours * 1e3, t_ref * 1e3, f"{t_ref / t_ours:.2f}x"))
                    print(rows[-1], flush=True)
            except AssertionError as e:
                rows.append((label, f"check ({kernel})", float("nan"), float("nan"), f"FAILED: {e}"))
                print(rows[-1], flush=True)
            finally:
                pyseq.set_cuda_recurrent_kernel("steps")
        del ours, ref, x
        torch.cuda.empty_cache()
    return rows, skipped


CTC_SIZES = [(500, 32, 32, 100), (200, 16, 1000, 50), (1000, 8, 5000, 200)]


def ctc_inputs(T, N, C, S, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, N, C, generator=gen).cuda()
    targets = torch.randint(1, C, (N, S), generator=gen)
    lengths = torch.full((N,), T, dtype=torch.long)
    target_lengths = torch.randint(S // 2, S + 1, (N,), generator=gen)
    return logits, targets, lengths, target_lengths


def ctc_loss_and_grad(loss_fn, logits, *args):
    x = logits.detach().requires_grad_()
    loss = loss_fn(x.log_softmax(2), *args)
    loss.backward()
    return loss.detach(), x.grad


def ctc_section(budget_s, quick):
    """Rows of the CTC loss against F.ctc_loss on CUDA (native, and cuDNN where torch takes it)."""
    per_side = 0.05 if quick else 0.25
    start = time.monotonic()
    rows, skipped = [], []
    F = torch.nn.functional
    for T_, N, C, S in CTC_SIZES[:1] if quick else CTC_SIZES:
        logits, targets, lengths, target_lengths = ctc_inputs(T_, N, C, S)
        concatenated = torch.cat([targets[n, : target_lengths[n]] for n in range(N)]).int()
        references = {
            "native": (targets.cuda(), lengths, target_lengths),
            "cuDNN": (concatenated, lengths.int(), target_lengths.int()),  # torch's conditions for cuDNN
        }
        ours_args = (targets.cuda(), lengths, target_lengths)

        def ours_fn(lp, *args):
            return pyseq.functional.ctc_loss(lp, *args, reduction="sum")

        def ref_fn(lp, *args):
            return F.ctc_loss(lp, *args, reduction="sum")

        for name, ref_args in references.items():
            label = f"CTC T={T_} N={N} C={C} S={S} (vs F.ctc_loss {name})"
            if time.monotonic() - start > budget_s:
                skipped.append(label)
                continue
            try:
                loss, grad = ctc_loss_and_grad(ours_fn, logits, *ours_args)
                again = ctc_loss_and_grad(ours_fn, logits, *ours_args)
                assert torch.equal(loss, again[0]) and torch.equal(grad, again[1]), "gradient not deterministic"
                ref_loss, ref_grad = ctc_loss_and_grad(ref_fn, logits, *ref_args)
                torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-2)
                torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-4)
            except AssertionError as e:
                rows.append((label, "check", float("nan"), float("nan"), f"FAILED: {e}"))
                print(rows[-1], flush=True)
                continue
            t_ours, t_ref = time_pair(synchronized(lambda: ctc_loss_and_grad(ours_fn, logits, *ours_args)),
                                      synchronized(lambda: ctc_loss_and_grad(ref_fn, logits, *ref_args)),
                                      budget_s=per_side)
            rows.append((label, "fwd+bwd", t_ours * 1e3, t_ref * 1e3, f"{t_ref / t_ours:.2f}x"))
            print(rows[-1], flush=True)
    return rows, skipped


CRF_SIZES = [(100, 64, 20), (200, 16, 50)]


def composed_crf_llh(em, tags, mask, start, end, trans):
    """pytorch-crf's log-likelihood as torch ops: time-major em [T, B, K], tags [T, B], mask [T, B] with the first step
    on; a Python loop over time, a [B, K, K] logsumexp per step."""
    T, B, _ = em.shape
    batch = torch.arange(B, device=em.device)
    score = start[tags[0]] + em[0, batch, tags[0]]
    alpha = start + em[0]
    for t in range(1, T):
        on = mask[t]
        score = score + (trans[tags[t - 1], tags[t]] + em[t, batch, tags[t]]) * on
        step = torch.logsumexp(alpha.unsqueeze(2) + trans + em[t].unsqueeze(1), dim=1)
        alpha = torch.where(on.unsqueeze(1), step, alpha)
    last = tags.gather(0, (mask.sum(0) - 1).unsqueeze(0)).squeeze(0)
    return score + end[last] - torch.logsumexp(alpha + end, dim=1)


def composed_crf_decode(em, mask, start, end, trans):
    """pytorch-crf's Viterbi as torch ops: the max-product with back-pointers, the traceback on the host."""
    T, B, _ = em.shape
    delta = start + em[0]
    back = []
    for t in range(1, T):
        best, arg = (delta.unsqueeze(2) + trans).max(dim=1)
        back.append(arg)
        delta = torch.where(mask[t].unsqueeze(1), best + em[t], delta)
    last = (delta + end).argmax(dim=1).tolist()
    lengths = mask.sum(0).tolist()
    back = [b.tolist() for b in back]
    paths = []
    for b in range(B):
        path = [last[b]]
        for t in range(lengths[b] - 1, 0, -1):
            path.append(back[t - 1][b][path[-1]])
        paths.append(path[::-1])
    return paths


def crf_section(budget_s, quick):
    """Rows of the CRF's log-likelihood (forward+backward) and Viterbi against pytorch-crf's algorithm as torch ops."""
    per_side = 0.05 if quick else 0.25
    start_time = time.monotonic()
    rows, skipped = [], []
    for T_, B, K in CRF_SIZES[:1] if quick else CRF_SIZES:
        label = f"CRF T={T_} B={B} K={K} (vs pytorch-crf's algorithm as torch ops)"
        if time.monotonic() - start_time > budget_s:
            skipped.append(label)
            continue
        gen = torch.Generator().manual_seed(0)
        crf = pyseq.nn.CRF(K).cuda()
        em = torch.randn(T_, B, K, generator=gen).cuda()
        tags = torch.randint(K, (T_, B), generator=gen).cuda()
        lengths = torch.randint(int(0.8 * T_), T_ + 1, (B,), generator=gen)
        lengths[0] = T_
        mask = (torch.arange(T_).unsqueeze(1) < lengths).cuda()
        params = (crf.start_transitions, crf.end_transitions, crf.transitions)

        def ours():
            x = em.detach().requires_grad_()
            crf.zero_grad(set_to_none=True)
            (-crf(x, tags, mask)).backward()
            return [x.grad] + [p.grad for p in params]

        def composed():
            x = em.detach().requires_grad_()
            crf.zero_grad(set_to_none=True)
            (-composed_crf_llh(x, tags, mask, *params).sum()).backward()
            return [x.grad] + [p.grad for p in params]

        try:
            first, again, expected = ours(), ours(), composed()
            assert all(torch.equal(a, b) for a, b in zip(first, again)), "gradients not deterministic"
            for a, b in zip(first, expected):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
            with torch.no_grad():
                assert crf.decode(em, mask) == composed_crf_decode(em, mask, *params), "Viterbi paths differ"
        except AssertionError as e:
            rows.append((label, "check", float("nan"), float("nan"), f"FAILED: {e}"))
            print(rows[-1], flush=True)
            continue
        t_ours, t_ref = time_pair(synchronized(ours), synchronized(composed), budget_s=per_side)
        rows.append((label, "nll fwd+bwd", t_ours * 1e3, t_ref * 1e3, f"{t_ref / t_ours:.2f}x"))
        print(rows[-1], flush=True)
        with torch.no_grad():
            t_ours, t_ref = time_pair(lambda: crf.decode(em, mask), lambda: composed_crf_decode(em, mask, *params),
                                      budget_s=per_side)
        rows.append((label, "decode", t_ours * 1e3, t_ref * 1e3, f"{t_ref / t_ours:.2f}x"))
        print(rows[-1], flush=True)
    return rows, skipped


def peak_cuda_mb(fn):
    """MB by which one call of fn raises the GPU memory in use above where it started."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - start) / 2**20


def attention_section(budget_s, quick):
    """Rows of attention on CUDA: the CPU benchmark's comparisons, with the inputs on the GPU."""
    import attention_cases as cases

    per_side = 0.05 if quick else 0.25
    start_time = time.monotonic()
    rows, skipped = [], []
    for size in cases.SIZES[:1] if quick else cases.SIZES:
        for name, ours, ref, inputs, n_grad, ref_name in cases.comparisons(cases.Case(*size)):
            if "keys cached" in name:  # its cached keys are CPU tensors; the CUDA kernels compute each term directly
                continue
            label = f"attention {name} (vs {ref_name})"
            if time.monotonic() - start_time > budget_s:
                skipped.append(label)
                continue
            inputs = tuple(x.cuda() for x in inputs)
            try:
                cases.check(ours, ref, inputs, n_grad)
            except AssertionError as e:
                rows.append((label, "check", float("nan"), float("nan"), f"FAILED: {e}"))
                print(rows[-1], flush=True)
                continue
            run_ours, run_ref = (synchronized(cases.run_fn(fn, inputs, True, n_grad)) for fn in (ours, ref))
            t_ours, t_ref = time_pair(run_ours, run_ref, budget_s=per_side)
            rows.append((label, "fwd+bwd", t_ours * 1e3, t_ref * 1e3, f"{t_ref / t_ours:.2f}x"))
            mb_ours, mb_ref = peak_cuda_mb(run_ours), peak_cuda_mb(run_ref)
            rows.append((label, "peak MB (fwd+bwd)", mb_ours, mb_ref, f"{mb_ref / max(mb_ours, 1e-3):.1f}x less"))
            print(rows[-2], rows[-1], flush=True)
            torch.cuda.empty_cache()
    return rows, skipped


def ntm_section(budget_s, quick):
    """Rows of the NTM memory loop on CUDA (benchmarks/ntm_cases.py: one read and one write head, T steps) against
    the paper's equations as torch ops, forward and forward+backward."""
    import ntm_cases as cases

    per_side = 0.05 if quick else min(0.5, budget_s / 4)
    rows = []
    for case in cases.all_cases():
        inputs = {k: v.cuda() for k, v in cases.build(case).items()}
        try:
            cases.check(inputs)
        except AssertionError as e:
            return [(case.label, "check", float("nan"), float("nan"), f"FAILED: {e}")], []
        for backward in (False, True):
            run_ours, run_ref = (synchronized(cases.run_fn(ops, inputs, backward))
                                 for ops in (cases.FUSED, cases.COMPOSED))
            t_ours, t_ref = time_pair(run_ours, run_ref, budget_s=per_side)
            label = "fwd+bwd" if backward else "fwd"
            rows.append((case.label, label, t_ours * 1e3, t_ref * 1e3, f"{t_ref / t_ours:.2f}x"))
            print(rows[-1], flush=True)
    return rows, []


SECTIONS = [  # and their shares of the budget
    ("recurrent", rnn_section, 0.4), ("CTC", ctc_section, 0.2), ("CRF", crf_section, 0.15),
    ("attention", attention_section, 0.15), ("NTM", ntm_section, 0.1),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds after which no new case starts")
    parser.add_argument("--quick", action="store_true", help="one size per family and dtype, short timing")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    start = time.monotonic()
    rows, skipped = [], []
    for _, section, share in SECTIONS:
        section_rows, section_skipped = section(args.budget * share, args.quick)
        rows += section_rows
        skipped += section_skipped

    props = torch.cuda.get_device_properties(0)
    lines = [
        f"GPU: {props.name}; torch {torch.__version__}, CUDA {torch.version.cuda}; pyseq {pyseq.build_info()}",
        f"command: python benchmarks/gpu_check.py{' --quick' if args.quick else ''}; "
        f"{time.monotonic() - start:.0f} s",
        "",
        "| case | pass | pyseq ms | reference ms | reference/pyseq |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {c} | {p} | {a:.3f} | {b:.3f} | {r} |" for c, p, a, b, r in rows]
    if skipped:
        lines += ["", "Not run (time budget spent): " + "; ".join(skipped)]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    if any(r[1].startswith("check") for r in rows):
        sys.exit("gpu_check: pyseq disagreed with its reference (see the table)")


if __name__ == "__main__":
    main()
