"""The Clockwork RNN as the paper writes it (Koutnik et al. 2014, section 3), one step and one module at a time in
torch ops: module i, with period T_i, is executed at step t when t mod T_i = 0 and reads the input and the modules j
with T_j >= T_i; the others keep their value. Sequences of different lengths keep their state after their last step
and output zeros there."""

import torch


def reference_clockwork(x, w_ih, w_hh, b_ih, b_hh, periods, h0, nonlinearity="tanh", lengths=None):
    """x [T, B, I], w_ih [H, I], w_hh [H, H], b_ih and b_hh [H] or None, h0 [B, H], lengths [B] or None.
    Returns (output [T, B, H], h_n [B, H])."""
    T, B, _ = x.shape
    H = w_hh.shape[0]
    width = H // len(periods)
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    bias = sum(b for b in (b_ih, b_hh) if b is not None)
    lengths = torch.full((B,), T) if lengths is None else lengths
    h, outputs = h0, []
    for t in range(T):
        modules = []
        for i, period in enumerate(periods):
            rows = slice(i * width, (i + 1) * width)
            if t % period:
                modules.append(h[:, rows])
                continue
            reads = [j for j, p in enumerate(periods) if p >= period]
            pre = x[t] @ w_ih[rows].t() + (bias[rows] if torch.is_tensor(bias) else 0)
            for j in reads:
                pre = pre + h[:, j * width:(j + 1) * width] @ w_hh[rows, j * width:(j + 1) * width].t()
            modules.append(act(pre))
        stepped = torch.cat(modules, 1)
        running = (t < lengths).unsqueeze(1)
        h = torch.where(running, stepped, h)
        outputs.append(torch.where(running, h, torch.zeros_like(h)))
    output = torch.stack(outputs) if outputs else x.new_zeros(0, B, H)
    return output, h
