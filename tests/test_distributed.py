"""Data-parallel training: pyseq models under DistributedDataParallel (gloo, two processes on this machine) get the
gradients of one process on the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pyseq

B, T, I, H, K = 6, 7, 5, 8, 4  # batch split in two halves of 3


class Tagger(torch.nn.Module):
    """Bi-LSTM + CRF."""

    def __init__(self):
        super().__init__()
        self.lstm = pyseq.nn.LSTM(I, H, batch_first=True, bidirectional=True)
        self.emit = torch.nn.Linear(2 * H, K)
        self.crf = pyseq.nn.CRF(K, batch_first=True)

    def forward(self, x, tags, mask):
        return -self.crf(self.emit(self.lstm(x)[0]), tags, mask, reduction="mean")


class Recognizer(torch.nn.Module):
    """GRU encoder, additive attention over it, CTC."""

    def __init__(self):
        super().__init__()
        self.gru = pyseq.nn.GRU(I, H, batch_first=True)
        self.attention = pyseq.nn.AdditiveAttention(H, H, 6)
        self.out = torch.nn.Linear(2 * H, K)

    def forward(self, x, targets, target_lengths):
        h, _ = self.gru(x)
        context, _ = self.attention(h, h)
        log_probs = self.out(torch.cat([h, context], -1)).log_softmax(-1).transpose(0, 1)
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        return pyseq.functional.ctc_loss(log_probs, targets, lengths, target_lengths, reduction="mean")


def batches():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, I, generator=g)
    tags = torch.randint(0, K, (B, T), generator=g)
    mask = torch.arange(T) < torch.tensor([7, 5, 7, 3, 6, 7]).unsqueeze(1)
    targets = torch.randint(1, K, (B, 3), generator=g)
    target_lengths = torch.tensor([3, 2, 1, 3, 2, 2])
    return {"tagger": (x, tags, mask), "recognizer": (x, targets, target_lengths)}


def models():
    torch.manual_seed(0)
    return {"tagger": Tagger(), "recognizer": Recognizer()}


def gradients(model, inputs):
    model.zero_grad()
    model(*inputs).backward()
    return [p.grad.clone() for p in model.parameters()]


def worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        half = B // world
        for name, model in models().items():
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            inputs = tuple(t[rank * half:(rank + 1) * half] for t in batches()[name])
            results[name] = gradients(ddp, inputs)  # averaged over the two processes by DDP
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks done before either tears down: a gloo group destroyed while its peer still talks to it can
        # abort the peer ("terminate called without an active exception", seen once in CI under load).
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_gradients_match_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = {name: gradients(model, batches()[name]) for name, model in models().items()}
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name in expected:
            # each half's mean loss, averaged by DDP, is the whole batch's mean (equal halves)
            for a, b in zip(got[name], expected[name]):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
