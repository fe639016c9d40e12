"""Modules (like ``torch.nn``), one file per kernel family."""

from .attention import AdditiveAttention, DotAttention, LocationAwareAttention
from .clockwork import ClockworkRNN
from .crf import CRF
from .ctc import CTCLoss
from .memnet import MemoryNetwork
from .ntm import NTM, NTMState
from .rnn import GRU, LSTM, RNN, init_irnn_
from .scrn import SCRN

__all__ = ["LSTM", "GRU", "RNN", "init_irnn_", "CTCLoss", "CRF", "AdditiveAttention", "DotAttention",
           "LocationAwareAttention", "NTM", "NTMState", "MemoryNetwork",
           "ClockworkRNN", "SCRN"]
