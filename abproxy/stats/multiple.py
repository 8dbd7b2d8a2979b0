"""Multiple-testing adjustment of p-values (METHODS §9)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from statsmodels.stats.multitest import multipletests


def adjust_pvalues(pvalues: Sequence[float], method: Literal["holm", "fdr_bh", "none"],
                   alpha: float = 0.05) -> list[float]:
    """Holm (FWER) or Benjamini–Hochberg (FDR) adjusted p-values, same order.

    Uses statsmodels ``multipletests`` with an explicit method (its default is
    'hs'). NaNs pass through and do not count towards the family size m.
    """
    if method not in ("holm", "fdr_bh", "none"):
        raise ValueError(f"unknown method {method!r}")
    out = [float(p) for p in pvalues]
    valid = [i for i, p in enumerate(out) if not math.isnan(p)]
    if method == "none" or not valid:
        return out
    adj = multipletests([out[i] for i in valid], alpha=alpha, method=method)[1]
    for i, p in zip(valid, adj):
        out[i] = float(p)
    return out
