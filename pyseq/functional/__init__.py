"""Functional API: pyseq's fused ops for users who hold their own weights (like ``torch.nn.functional``), one module
per family: ``rnn`` (lstm, gru, rnn), ``clockwork`` (clockwork_rnn, clockwork_connectivity), ``ctc`` (ctc_loss),
``crf`` (crf_*, hmm_viterbi), ``attention`` (additive_attention, dot_attention, project_keys), ``ntm`` (ntm_address,
ntm_read, ntm_step, ntm_write), ``memnet`` (position_encoding, position_encoded_bag, memory_hops) and ``scrn`` (scrn);
every name in a module's ``__all__`` is also here.
"""

from . import attention as _attention, clockwork as _clockwork, crf as _crf, ctc as _ctc, memnet as _memnet
from . import ntm as _ntm, rnn as _rnn, scrn as _scrn
from .attention import *  # noqa: F401,F403
from .clockwork import *  # noqa: F401,F403
from .crf import *  # noqa: F401,F403
from .ctc import *  # noqa: F401,F403
from .memnet import *  # noqa: F401,F403
from .ntm import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
from .scrn import *  # noqa: F401,F403

__all__ = [*_rnn.__all__, *_clockwork.__all__, *_ctc.__all__, *_crf.__all__, *_attention.__all__, *_ntm.__all__,
           *_memnet.__all__, *_scrn.__all__]
