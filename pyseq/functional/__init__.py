"""Functional API: pyseq's fused ops for users who hold their own weights (like ``torch.nn.functional``), one module
per family: ``rnn`` (lstm, gru, rnn), ``ctc`` (ctc_loss), ``crf`` (crf_*, hmm_viterbi), ``attention``
(additive_attention, dot_attention, project_keys) and ``ntm`` (ntm_address, ntm_read, ntm_step, ntm_write); every
public name is also here.
"""

from .attention import ProjectedKeys, additive_attention, dot_attention, project_keys
from .crf import (crf_hinge_loss, crf_log_likelihood, crf_log_partition, crf_marginals, crf_score, crf_viterbi,
                  hmm_viterbi)
from .ctc import ctc_loss
from .ntm import ntm_address, ntm_read, ntm_step, ntm_write
from .rnn import gru, lstm, rnn

__all__ = [
    "lstm",
    "gru",
    "rnn",
    "ctc_loss",
    "crf_log_partition",
    "crf_score",
    "crf_log_likelihood",
    "crf_marginals",
    "crf_viterbi",
    "crf_hinge_loss",
    "hmm_viterbi",
    "additive_attention",
    "dot_attention",
    "project_keys",
    "ProjectedKeys",
    "ntm_address",
    "ntm_read",
    "ntm_step",
    "ntm_write",
]
