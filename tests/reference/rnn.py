"""Naive recurrent layers: one Python step at a time with plain torch ops, written from the cell equations.

Independent of both pyseq's kernels and torch.nn's fused CPU paths (oneDNN for the LSTM), so a disagreement
between those two can be settled here.
"""

import torch


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None):
    gates = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        gates = gates + b_ih + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = h @ w_hr.T
    return h, c


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    gi = x @ w_ih.T
    gh = h @ w_hh.T
    if b_ih is not None:
        gi, gh = gi + b_ih, gh + b_hh
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, relu):
    a = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        a = a + b_ih + b_hh
    return torch.relu(a) if relu else torch.tanh(a)


def single_layer(mode, x, lengths, h0, c0, weights, reverse=False):
    """One layer, one direction over padded x: [T, B, I] with per-sequence lengths; steps past a sequence's end
    leave its state alone. Returns (y [T, B, Hr] with zeros past the ends, h_n, c_n)."""
    has_bias = len(weights) >= 4
    w_ih, w_hh = weights[0], weights[1]
    b_ih, b_hh = (weights[2], weights[3]) if has_bias else (None, None)
    w_hr = weights[-1] if mode == "LSTM" and len(weights) in (3, 5) else None
    T = x.shape[0]
    h, c = h0, c0
    ys = [None] * T
    for t in reversed(range(T)) if reverse else range(T):
        active = (lengths > t).unsqueeze(1)
        if mode == "LSTM":
            h_new, c_new = lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr)
            c = torch.where(active, c_new, c)
        elif mode == "GRU":
            h_new = gru_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        else:
            h_new = rnn_cell(x[t], h, w_ih, w_hh, b_ih, b_hh, relu=mode == "RNN_RELU")
        h = torch.where(active, h_new, h)
        ys[t] = torch.where(active, h_new, torch.zeros_like(h_new))
    return torch.stack(ys), h, c
