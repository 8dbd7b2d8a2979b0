"""Synthetic workspaces with known true effects (demo, tests, benchmarks).

Everything is generated inside DuckDB with SQL and written straight to Parquet, so ten million
events take seconds. Randomness is a deterministic hash of (seed, experiment, unit, row, purpose):
``unif(k, salt) = (hash(xor(k, salt)) >> 11 + 0.5) / 2^53``. DuckDB's ``hash`` of a single
integer is a 64-bit finaliser, so the uniforms are independent across salts and do not depend on
thread scheduling (``random()`` under several threads is not reproducible). With DuckDB's default
``preserve_insertion_order`` the generated files are byte-identical for the same spec.

The data model (per unit, during ``[exposed_at, exposed_at + 14 days)``):

* ``session_start``: 1..8 events, uniform (mean 4.5); unaffected by the treatment.
* ``purchase``: the unit buys with probability ``0.25 * (1 + conversion_lift)``; a buyer buys
  ``1 + Poisson(1)`` items (truncated at 8) whose values are ``20 * a * m * LogNormal(mean 1)``,
  where ``a`` is the unit's spend propensity (log-normal, mean 1) and
  ``m = (1 + spend_lift) / (1 + conversion_lift)`` for treatment arms (1 for the control). So the
  mean spend per buyer is about 40 and the expected spend per user of a treatment arm is exactly
  ``(1 + spend_lift)`` times the control's: ``spend_lift`` is the true lift of *spend per user*.
* ``feature_use``: ``floor(3 * (1 + usage_lift) * Exp(1) + U)`` events (mean exactly
  ``3 * (1 + usage_lift)``).
* ``refund``: one event with probability ``0.05 * (1 + refund_lift)``.
* Pre-period (``[exposed_at - pre_period_days, exposed_at)``): ``purchase`` events with
  probability ``0.25 * pre_period_days / 14`` drawn like post-period purchases without the
  treatment. The pre and post purchase decisions share one uniform with probability 0.8 and both
  use the unit's propensity ``a``, so pre-period spend predicts post-period spend (rho^2 ~ 0.3 for
  14 + 14 days) and CUPED reduces variance for real.

Treatment effects: every non-control arm gets the same lifts. With ``fading`` a unit exposed on
day ``d`` (0-based) of ``days`` gets ``lift * (1 - fading * d / (days - 1))``, so the average lift
is ``lift * (1 - fading / 2)``. With ``segment_harm`` the spend lift inside that segment is
``segment_harm.spend_lift`` instead of ``spend_lift``; because control spend per user is the same in
every segment, the overall true spend lift is then the mixture
``share * segment_lift + (1 - share) * spend_lift`` (see `true_lifts`).

Modules: `spec` (what to simulate, the true effects, the matching abproxy.yaml), `sql` (the DuckDB SQL
that draws units, exposures and events), `write` (the workspace on disk).
"""
from __future__ import annotations

from .spec import (DUPLICATE_SHARE, WINDOW_DAYS, ExperimentSpec, Injections, SegmentHarm, SimulationSpec,
                   analysis_time, config_for, data_end, default_spec, demo_spec, segment_shares, true_lifts)
from .write import simulate

__all__ = ["DUPLICATE_SHARE", "WINDOW_DAYS", "ExperimentSpec", "Injections", "SegmentHarm", "SimulationSpec",
           "analysis_time", "config_for", "data_end", "default_spec", "demo_spec", "segment_shares", "simulate",
           "true_lifts"]
