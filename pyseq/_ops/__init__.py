"""Custom ops around pyseq._C, one module per kernel family."""
from . import attention, crf, ctc, ntm, rnn  # noqa: F401
