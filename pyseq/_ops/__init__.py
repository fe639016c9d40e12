"""Custom ops around pyseq._C, one module per kernel family."""
from . import crf, ctc, rnn  # noqa: F401
