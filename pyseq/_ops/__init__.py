"""Custom ops around pyseq._C, one module per kernel family."""
from . import rnn  # noqa: F401
