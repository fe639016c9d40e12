"""The end-to-end memory network (Sukhbaatar, Szlam, Weston and Fergus 2015) on pyseq's fused memory-network ops:
the story's memories as position-encoded bags (pyseq.functional.position_encoded_bag) and every hop of attention in
one op (pyseq.functional.memory_hops)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional as F


class MemoryNetwork(nn.Module):
    """An end-to-end memory network over stories of sentences of word ids, answering a question with a word (or
    class) of ``answer_size``.

    Args:
        vocab_size: V, word ids in [0, V); id ``padding_idx`` pads sentences and stories.
        embedding_dim: d.
        max_sentences: the most sentences a story may have (the temporal encoding's size).
        hops: K.
        tying: ``"adjacent"`` (the paper's default: the output embedding of hop k is the input embedding of hop
            k + 1, the question's embedding is the first input embedding, the answer layer is the last output
            embedding; K + 1 embeddings) or ``"layerwise"`` (one input and one output embedding for every hop, a
            separate question embedding, u_{k+1} = H u_k + o_k, a separate answer layer).
        answer_size: the answers' count; with adjacent tying it must be V (the answer is a word), the default.
        temporal_encoding: add a learned vector per sentence age (the latest sentence is age 0) to each memory.

    The position encoding of the paper's section 4.1 weights each word by its position within a sentence of J words,
    J the wider of the story tensor's sentences and the question, the same for both (as the authors' code does).
    ``softmax`` (True) is the hops' attention; set it False for the paper's linear start (the first epochs of
    training without the softmax), then back.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, max_sentences: int, hops: int = 3,
                 tying: str = "adjacent", answer_size: int | None = None, temporal_encoding: bool = True,
                 padding_idx: int = 0):
        super().__init__()
        if tying not in ("adjacent", "layerwise"):
            raise ValueError(f"tying must be 'adjacent' or 'layerwise', got {tying!r}")
        if hops < 1 or vocab_size < 1 or embedding_dim < 1 or max_sentences < 1:
            raise ValueError("vocab_size, embedding_dim, max_sentences and hops must be positive")
        answer_size = vocab_size if answer_size is None else answer_size
        if tying == "adjacent" and answer_size != vocab_size:
            raise ValueError(f"adjacent tying answers with the last embedding: answer_size must be vocab_size "
                             f"({vocab_size}), got {answer_size}")
        self.vocab_size, self.embedding_dim, self.max_sentences = vocab_size, embedding_dim, max_sentences
        self.hops, self.tying, self.answer_size, self.padding_idx = hops, tying, answer_size, padding_idx
        self.softmax = True
        # The story's embeddings: adjacent, E_0 .. E_K (hop k reads E_k, writes E_{k+1}); layer-wise, (A, C).
        tables = hops + 1 if tying == "adjacent" else 2
        self.embeddings = nn.Parameter(torch.empty(tables, vocab_size, embedding_dim))
        self.temporal = nn.Parameter(torch.empty(tables, max_sentences, embedding_dim)) if temporal_encoding else None
        if tying == "layerwise":
            self.question_embedding = nn.Parameter(torch.empty(vocab_size, embedding_dim))
            self.H = nn.Parameter(torch.empty(embedding_dim, embedding_dim))
            self.answer = nn.Linear(embedding_dim, answer_size, bias=False)
        else:
            self.question_embedding = self.H = self.answer = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialization: every weight from N(0, 0.1^2); H the identity plus that noise."""
        for p in self.parameters():
            nn.init.normal_(p, 0.0, 0.1)
        if self.H is not None:
            with torch.no_grad():
                self.H.add_(torch.eye(self.embedding_dim))

    def memories(self, story: Tensor, words: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The memories of ``story`` ``[B, S, W]`` (word ids, sentences oldest first, each sentence's padding after
        its words): (memory_in, memory_out) as memory_hops takes them, and the mask ``[B, S]``. A sentence of padding
        only is an empty memory: never read, but counted in the ages of the sentences before it (the temporal
        encoding), as the paper's random noise inserts them. The position encoding's J is the larger of W and
        ``words`` (a question's width)."""
        if story.dim() != 3 or story.dtype != torch.int64:
            raise ValueError(f"story must be int64 word ids [B, S, W], got {story.dim()}-D {story.dtype}")
        B, S, W = story.shape
        if S > self.max_sentences:
            raise ValueError(f"the story has {S} sentences, more than max_sentences = {self.max_sentences}")
        lengths = (story != self.padding_idx).sum(-1)  # [B, S]
        mask = lengths > 0
        weights = F.position_encoding(max(W, words or 0), self.embedding_dim, dtype=self.embeddings.dtype,
                                      device=story.device)[:W]
        bags = torch.stack([F.position_encoded_bag(story, weights, lengths, table=table)
                            for table in self.embeddings])  # [tables, B, S, d]
        if self.temporal is not None:
            position = torch.arange(S, device=story.device)
            latest = (mask * position).amax(1, keepdim=True) if S else position.unsqueeze(0)  # [B, 1]
            age = (latest - position).clamp_min(0)  # [B, S]: the latest sentence 0
            bags = bags + self.temporal[:, age]
        if self.tying == "adjacent":
            return bags[:-1], bags[1:], mask
        return bags[0], bags[1], mask

    def read(self, story: Tensor, question: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The hops without the answer layer. Args as :meth:`forward`.

        Returns ``(u [B, d], u_K [B, d], weights [hops, B, S])``: the question's embedding, the state after the
        last hop (u plus every hop's read), and each hop's attention over the sentences. For answer layers of one's
        own (scoring answer choices, say)."""
        if question.dim() != 2 or question.dtype != torch.int64:
            raise ValueError(f"question must be int64 word ids [B, Wq], got {question.dim()}-D {question.dtype}")
        memory_in, memory_out, mask = self.memories(story, question.shape[1])
        # One position encoding for the story's sentences and the question: a word weighs the same at the same place.
        words = max(story.shape[2], question.shape[1])
        question_table = self.embeddings[0] if self.tying == "adjacent" else self.question_embedding
        weights = F.position_encoding(words, self.embedding_dim, dtype=question_table.dtype,
                                      device=question.device)[: question.shape[1]]
        u = F.position_encoded_bag(question, weights, (question != self.padding_idx).sum(-1), table=question_table)
        u_K, attention = F.memory_hops(u, memory_in, memory_out, mask, self.hops, self.H, self.softmax)
        return u, u_K, attention

    def forward(self, story: Tensor, question: Tensor) -> tuple[Tensor, Tensor]:
        """Args: story ``[B, S, W]`` int64 word ids (see :meth:`memories`); question ``[B, Wq]`` int64.

        Returns ``(logits [B, answer_size], weights [hops, B, S])``: the answer's scores and each hop's attention
        over the sentences."""
        _, u, attention = self.read(story, question)
        logits = u @ self.embeddings[-1].t() if self.tying == "adjacent" else self.answer(u)
        return logits, attention
