"""Patch: a beam-safe form of ms-swift 4.6.0's stop-word criterion.

ms-swift's :class:`~swift.template.utils.StopWordsCriteria` remembers "done" per row index across steps, which
under beam search ended later candidates in a row that once held a finished one (truncated identifiers). The SSID
template swaps it for :class:`BeamSafeStopWordsCriteria` under beam search. Canary:
``tests/test_compat.py::test_stop_words_still_needed``.
"""

from __future__ import annotations

import torch
from swift.template.utils import StopWordsCriteria

PATCHES = "ms-swift==4.6.0 (swift/template/utils.py: StopWordsCriteria)"


class BeamSafeStopWordsCriteria(StopWordsCriteria):
    """ms-swift's stop-word criterion without state carried across steps.

    ms-swift's :class:`StopWordsCriteria` remembers "done" per row index, but beam search passes a
    different candidate in each row at every step, so a row that once held a finished candidate
    would end every later candidate in it (truncated identifiers). This one judges each call afresh.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.start_idx == -1:
            self.start_idx = input_ids.shape[1] - 1
        self.is_done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return super().__call__(input_ids, scores, **kwargs)
