"""Custom ops around pyseq._C, one module per kernel family."""
from . import ctc, rnn  # noqa: F401
