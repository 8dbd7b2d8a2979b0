"""Sample-ratio-mismatch χ² goodness-of-fit test (METHODS §8)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SRMResult:
    chi2: float
    df: int
    p_value: float
    ok: bool  # False when p < threshold: withhold effects
    observed: dict[str, int]
    expected: dict[str, float]
    threshold: float
    warning: str | None = None


def srm_test(observed: dict[str, int], weights: dict[str, float],
             threshold: float = 0.001) -> SRMResult:
    """X² = Σ(n_v − E_v)²/E_v, E_v = w_v/Σw·Σn, df = K−1 (§8; gbstats ``check_srm``).

    Variants are the keys of ``weights`` (normalised; need not sum to 1); a
    variant missing from ``observed`` counts 0. Units in a variant without weight
    make the test fail (warning ``unexpected_variant``). Zero units or fewer
    than two variants → ok=True, p=1 with a warning. Negative or all-zero
    weights are a configuration error and raise ValueError.
    """
    if any(w < 0 or not math.isfinite(w) for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    names = list(weights) + [k for k in observed if k not in weights]
    obs = {k: int(observed.get(k, 0)) for k in names}
    total, wsum = sum(obs.values()), sum(weights.values())
    exp = {k: weights.get(k, 0.0) / wsum * total for k in names}
    df = len(weights) - 1
    if any(obs[k] > 0 and exp[k] == 0 for k in names):
        return SRMResult(math.inf, df, 0.0, False, obs, exp, threshold, "unexpected_variant")
    if total == 0 or df < 1:
        warning = "no_units" if total == 0 else "too_few_variants"
        return SRMResult(0.0, df, 1.0, True, obs, exp, threshold, warning)
    cells = [k for k in names if exp[k] > 0]
    chi2, p = pearson_chisquare([obs[k] for k in cells], [exp[k] for k in cells])
    return SRMResult(chi2, df, p, p >= threshold, obs, exp, threshold)


def pearson_chisquare(observed: list[int], expected: list[float]) -> tuple[float, float]:
    """(X², p) of scipy ``chisquare(observed, expected)``, computed as it does (Σ(o−e)²/e over float64
    arrays, p = χ²_sf(X², k−1) by ``scipy.special.chdtrc``) so the result is the same to the bit —
    without importing scipy.stats (~1 s), which `validate --data` would otherwise load for this alone."""
    import numpy as np
    from scipy.special import chdtrc

    o, e = np.asarray(observed, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    stat = np.sum((o - e) ** 2 / e)
    return float(stat), float(chdtrc(np.float64(len(o) - 1), stat))
