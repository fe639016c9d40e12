"""Custom ops around pyseq._C, one module per kernel family."""
from . import attention, clockwork, crf, ctc, memnet, ntm, rnn, scrn  # noqa: F401
