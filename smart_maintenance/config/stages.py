"""Settings -> the operators' configs, in one place and one pattern.

Each stage's config is a frozen dataclass in `operators/` whose field defaults
are the product's defaults; the settings sections take their defaults from
those fields (`config.settings.default_of`), so each default is written once.
Every function here reads only the sections it needs.

>>> from smart_maintenance.config.settings import load_settings
>>> configs = stage_configs(load_settings(alarms={"clear_windows": 5}))
>>> configs.alarm.clear_windows, configs.detect.learn_below == configs.alarm.clear_threshold
(5, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from smart_maintenance.config.durations import duration_ms
from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.detect.cross_sensor import CrossSensorConfig
from smart_maintenance.operators.detect.detectors import DetectConfig
from smart_maintenance.operators.detect.new_normal import NewNormalConfig
from smart_maintenance.operators.detect.trend import TrendConfig
from smart_maintenance.operators.ingest.windows import WindowConfig
from smart_maintenance.operators.judge.alarms import AlarmConfig
from smart_maintenance.operators.judge.validation import ValidationConfig
from smart_maintenance.operators.notify import NotifyConfig
from smart_maintenance.operators.plan.dispatch import DispatchConfig
from smart_maintenance.operators.plan.work_orders import WorkOrderConfig
from smart_maintenance.operators.predict.requests import PredictConfig
from smart_maintenance.operators.predict.ttf import HOUR_MS


def window_config(s: Settings) -> WindowConfig:
    w = s.windows
    return WindowConfig(
        length_ms=None if w.length_s == "auto" else int(float(w.length_s) * 1000),
        lateness_ms=int(w.allowed_lateness_s * 1000),
        auto_samples=w.auto_samples,
        auto_samples_one_sensor=w.auto_samples_one_sensor,
        auto_max_ms=None if w.auto_max_s is None else int(w.auto_max_s * 1000),
        max_sensors=s.limits.max_sensors_per_asset,
        future_ms=int(s.limits.future_jump_s * 1000),
        future_confirm=s.limits.future_confirm,
        phase_by_asset=w.phase_by_asset,
    )


def detect_config(s: Settings) -> DetectConfig:
    d = s.detection
    return DetectConfig(
        warmup_windows=d.warmup_windows,
        baseline_size=d.baseline_size,
        n_trees=d.iforest_trees,
        max_samples=d.iforest_samples,
        z_scale=d.z_scale,
        weaker_weight=d.weaker_weight,
        learn_below=s.alarms.clear_threshold,  # what an alarm counts as normal, the detectors may learn from
        seed=d.seed,
        detectors=d.detectors,
        refit_blocks=d.refit_blocks,
        context_windows=d.context_windows,
        lag_windows=d.lag_windows,
        slow_sensors=d.slow_sensors,
        drift_ratio=d.drift_ratio,
        mv_variance=d.mv_variance,
        mv_half=d.mv_half,
        warmup_ms=duration_ms(d, "warmup", "warmup_windows"),
        baseline_ms=duration_ms(d, "baseline_span", "baseline_size"),
        refit_ms=duration_ms(d, "refit_period", "refit_blocks"),
        warmup_share=d.warmup_share,
        warmup_min_share=d.warmup_min_share,
        warmup_in_event_time=d.warmup_in_event_time,
        stagger=d.stagger_fits,
        cross_sensor=CrossSensorConfig() if d.cross_sensor_drift else None,
        new_normal=NewNormalConfig(across=d.new_normal_across),
        trend=TrendConfig() if d.trend_evidence else None,
        score_through_repair=d.score_through_repair,
        start_baseline=d.start_baseline,
        repair_check=validation_config(s),  # the prior's check: would it open a candidate from the start?
    )


def validation_config(s: Settings) -> ValidationConfig:
    v = s.validation
    return ValidationConfig(
        open_threshold=v.open_threshold,
        confirm_threshold=v.confirm_threshold,
        persistence_k=v.persistence_k,
        persistence_n=v.persistence_n,
        flatline_windows=v.flatline_windows,
        dropout_fraction=v.dropout_fraction,
        grace_windows=v.startup_grace_windows,
        review_step=v.review_step,
        max_open=v.max_open,
        explain_features=v.explain_features,
        grace_ms=duration_ms(v, "startup_grace", "startup_grace_windows"),
        persistence_ms=duration_ms(v, "persistence", "persistence_k", "persistence_n"),
        trend=TrendConfig() if s.detection.trend_evidence else None,  # the detectors' evidence, summed here
        persist_across_stops=v.persist_across_stops,
        leap_at_stop=v.leap_at_stop,
        leap_needs_two=v.leap_needs_two,
        leap_after_stop=v.leap_after_stop,
        grace_within_run=v.grace_within_run,
        confirm_trend=v.confirm_trend,
    )


def alarm_config(s: Settings) -> AlarmConfig:
    a = s.alarms
    return AlarmConfig(clear_threshold=a.clear_threshold, clear_windows=a.clear_windows,
                       case_gap_ms=int(a.review_case_gap_s * 1000))


def notify_config(s: Settings) -> NotifyConfig:
    return NotifyConfig.from_settings(s.notify)


def predict_config(s: Settings) -> PredictConfig:
    p = s.prediction
    return PredictConfig(history_windows=p.history_windows, min_interval_ms=int(p.min_interval_s * 1000),
                         horizon_ms=int(p.horizon_h * HOUR_MS))


def work_order_config(s: Settings) -> WorkOrderConfig:
    w = s.work
    return WorkOrderConfig(margin=timedelta(hours=w.margin_h), due_by_severity_h=tuple(w.due_by_severity_h))


def dispatch_config(s: Settings) -> DispatchConfig:
    w = s.work
    return DispatchConfig(horizon_days=w.horizon_days, solve_time_s=w.solve_time_s, work_limit=w.work_limit,
                          gap_limit=w.gap_limit, timezone=w.timezone)


@dataclass(frozen=True)
class StageConfigs:
    """Every stage's config for one flow."""

    window: WindowConfig
    detect: DetectConfig
    validation: ValidationConfig
    alarm: AlarmConfig
    notify: NotifyConfig
    predict: PredictConfig
    work_order: WorkOrderConfig
    dispatch: DispatchConfig


def stage_configs(s: Settings) -> StageConfigs:
    return StageConfigs(window_config(s), detect_config(s), validation_config(s), alarm_config(s), notify_config(s),
                        predict_config(s), work_order_config(s), dispatch_config(s))
