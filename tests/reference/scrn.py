"""The SCRN as the paper writes it (Mikolov et al. 2015, section 4), one step at a time in torch ops:
s_t = (1 - alpha) B x_t + alpha s_{t-1}, h_t = sigmoid(P s_t + A x_t + R h_{t-1}) (+ a bias). Sequences of different
lengths keep their states after their last step and output zeros there."""

import torch


def reference_scrn(x, A, R, Bm, P, bias, alpha, h0, s0, nonlinearity="sigmoid", lengths=None):
    """x [T, B, I], A [H, I], R [H, H], Bm [C, I], P [H, C], bias [H] or None, h0 [B, H], s0 [B, C], lengths [B] or
    None. Returns (hidden [T, B, H], context [T, B, C], h_n [B, H], s_n [B, C])."""
    T, batch, _ = x.shape
    act = torch.sigmoid if nonlinearity == "sigmoid" else torch.tanh
    lengths = torch.full((batch,), T) if lengths is None else lengths
    h, s, hidden, context = h0, s0, [], []
    for t in range(T):
        running = (t < lengths).unsqueeze(1)
        s_new = (1 - alpha) * (x[t] @ Bm.t()) + alpha * s
        pre = s_new @ P.t() + x[t] @ A.t() + h @ R.t()
        if bias is not None:
            pre = pre + bias
        h = torch.where(running, act(pre), h)
        s = torch.where(running, s_new, s)
        hidden.append(torch.where(running, h, torch.zeros_like(h)))
        context.append(torch.where(running, s, torch.zeros_like(s)))
    if not hidden:
        return x.new_zeros(0, batch, h0.shape[1]), x.new_zeros(0, batch, s0.shape[1]), h, s
    return torch.stack(hidden), torch.stack(context), h, s
