"""Pure statistics for abproxy: sufficient statistics in, effects out (see METHODS.md)."""
from abproxy.stats.effects import (
    Effect,
    RatioParts,
    adjusted_alpha,
    fieller,
    cuped_effect,
    mean_effect,
    proportion_effect,
    ratio_effect,
    sequential,
    sequential_multiplier,
)
from abproxy.stats.levels import at_level
from abproxy.stats.heterogeneity import Heterogeneity, cochran_q
from abproxy.stats.multiple import adjust_pvalues
from abproxy.stats.power import Power, days_needed, power_analysis
from abproxy.stats.srm import SRMResult, srm_test
from abproxy.stats.sufficient import JointMoments, Moments
from abproxy.stats.trend import Trend, effect_trend

__all__ = [
    "Effect", "RatioParts", "adjusted_alpha", "at_level", "fieller", "Heterogeneity", "JointMoments", "Moments", "Power", "SRMResult", "Trend",
    "adjust_pvalues", "cochran_q", "cuped_effect", "days_needed", "effect_trend",
    "mean_effect", "power_analysis", "proportion_effect", "ratio_effect", "sequential",
    "sequential_multiplier", "srm_test",
]
