"""Custom ops around pyseq._C, one module per kernel family."""
from . import attention, crf, ctc, rnn  # noqa: F401
