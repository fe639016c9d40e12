"""Per-call times of the ops at tiny sizes, where the plumbing between Python, the dispatcher, autograd and the
kernels is most of a call: under torch.no_grad() and forward + backward, one thread, median of five rounds, in us.

Run it on two builds (two virtual environments with the same torch) to see what a change to the plumbing costs:

    python tools/per_call_times.py > before.json    # then, on the new build, > after.json
"""

import json
import time

import torch

import pyseq
import pyseq.functional as F

torch.manual_seed(0)
torch.set_num_threads(1)


def timeit(fn, n=2000):
    for _ in range(200): fn()
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n): fn()
        best.append((time.perf_counter() - t) / n * 1e6)
    return sorted(best)[2]


def r(*shape, g=False):
    return torch.randn(*shape).requires_grad_(g)


cases = {}
lstm = pyseq.nn.LSTM(16, 16)
x1 = r(1, 1, 16)
def lstm_ng():
    with torch.no_grad(): lstm(x1)
cases["lstm T=1 B=1 no_grad"] = lstm_ng
cases["lstm T=1 B=1 fwd+bwd"] = lambda: lstm(x1)[0].sum().backward()
lp = r(4, 1, 5).log_softmax(-1).detach().requires_grad_()
tg = torch.tensor([[1, 2]]); il = torch.tensor([4]); tl = torch.tensor([2])
cases["ctc T=4 fwd+bwd"] = lambda: F.ctc_loss(lp, tg, il, tl).backward()
def ctc_ng():
    with torch.no_grad(): F.ctc_loss(lp, tg, il, tl)
cases["ctc T=4 no_grad"] = ctc_ng
em = r(1, 3, 4, g=True); tr, st, en = r(4, 4, g=True), r(4, g=True), r(4, g=True); tags = torch.zeros(1, 3, dtype=torch.long)
cases["crf llh fwd+bwd"] = lambda: F.crf_log_likelihood(em, tags, tr, st, en).sum().backward()
def crf_ng():
    with torch.no_grad(): F.crf_log_likelihood(em, tags, tr, st, en)
cases["crf llh no_grad"] = crf_ng
q, k, v, val = r(1, 1, 8, g=True), r(1, 5, 8, g=True), r(8, g=True), r(1, 5, 8, g=True)
cases["additive fwd+bwd"] = lambda: F.additive_attention(q, k, v, val)[0].sum().backward()
def add_ng():
    with torch.no_grad(): F.additive_attention(q, k, v, val)
cases["additive no_grad"] = add_ng
cases["dot fwd+bwd"] = lambda: F.dot_attention(q, k, val)[0].sum().backward()
mem, params, prev = r(1, 8, 4, g=True), r(1, 2 * (4 + 6) + 8, g=True), torch.full((1, 2, 8), 1 / 8).requires_grad_()
cases["ntm_step fwd+bwd"] = lambda: sum(t.sum() for t in F.ntm_step(mem, params, prev, 1, 1)).backward()
def ntm_ng():
    with torch.no_grad(): F.ntm_step(mem, params, prev, 1, 1)
cases["ntm_step no_grad"] = ntm_ng
print(json.dumps({name: timeit(fn) for name, fn in cases.items()}))
