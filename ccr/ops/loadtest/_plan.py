"""Load plans: durations such as ``1m30s``, and fixed or staged plans.

Two kinds of plan, after k6's executors:

* **fixed**: ``requests`` requests by ``concurrency`` workers, each sending its next
  request as soon as the previous one finished;
* **staged**: a list of stages ``(duration, target)``; the target moves linearly from
  the previous stage's target (0 at the start) to the stage's own over its duration.
  In ``concurrency`` mode the target is a number of virtual users (closed model, k6
  ``ramping-vus``); in ``rate`` mode it is requests per second started whatever the
  answers do (open model, k6 ``ramping-arrival-rate``), at most ``max_vus`` in flight
  (arrivals over that are dropped and counted).

Plans are pure data: the runner (``_runner.py``) asks them for the target at a moment
and for arrival times.
"""

from __future__ import annotations

import math
import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_STAGES", "LoadPlan", "Mode", "Stage", "format_duration", "parse_duration"]

DEFAULT_STAGES = "30s:20,2m:50,30s:100,30s:50,30s:0"
"""The default staged plan (4 minutes): ramp-up, steady, spike, recovery, ramp-down."""

_MIN_SCALED_DURATION = 1.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Mode = Literal["concurrency", "rate"]


# --- durations --------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"1m30s"``, ``"500ms"``, ``"1.5h"`` or plain seconds -> seconds."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        position = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            position = match.end()
        if position != len(value):
            raise ValueError(f"duration {text!r}: use e.g. 30s, 2m, 1m30s, 500ms or seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration {text!r} must be more than 0")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration`, short: ``120.0`` -> ``"2m"``, ``90`` -> ``"1m30s"``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60.0)
    if minutes and rest < 1e-9:
        return f"{minutes:g}m"
    if minutes:
        return f"{minutes:g}m{rest:g}s"
    return f"{rest:g}s"


# --- plans -----------------------------------------------------------------------------


class Stage(BaseModel):
    """Move the target linearly to ``target`` over ``duration_s`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    duration_s: float = Field(gt=0, allow_inf_nan=False)
    target: int = Field(ge=0)

    def describe(self) -> str:
        return f"{format_duration(self.duration_s)}:{self.target}"


_AREA_EPSILON = 1e-9


class LoadPlan(BaseModel):
    """What to run: a fixed number of requests, or stages of VUs or request rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["fixed", "staged"]
    mode: Mode = "concurrency"
    stages: tuple[Stage, ...] = ()
    requests: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)
    max_vus: int | None = Field(default=None, ge=1)
    """Rate mode: at most this many requests in flight (default: see :attr:`vus_cap`)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind == "fixed":
            if self.requests is None or self.concurrency is None:
                raise ValueError("a fixed plan needs requests and concurrency")
            if self.stages:
                raise ValueError("a fixed plan has no stages")
            if self.mode != "concurrency":
                raise ValueError("a fixed plan runs in concurrency mode")
        else:
            if not self.stages:
                raise ValueError("a staged plan needs at least one stage")
            if max(s.target for s in self.stages) < 1:
                raise ValueError("every stage target is 0: the plan would send nothing")
            if self.requests is not None or self.concurrency is not None:
                raise ValueError("a staged plan takes stages, not requests/concurrency")
        return self

    # --- constructors ----------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, mode: Mode = "concurrency", max_vus: int | None = None) -> Self:
        """``"30s:20,2m:50,30s:0"`` -> a staged plan; errors name the bad stage."""
        stages: list[Stage] = []
        for number, part in enumerate(text.split(","), start=1):
            duration, sep, target = part.strip().partition(":")
            if not sep:
                raise ValueError(f"stage {number} {part.strip()!r}: expected DURATION:TARGET")
            try:
                seconds = parse_duration(duration)
            except ValueError as exc:
                raise ValueError(f"stage {number}: {exc}") from None
            try:
                count = int(target.strip())
            except ValueError:
                raise ValueError(f"stage {number}: target {target.strip()!r} is not a whole number") from None
            if count < 0:
                raise ValueError(f"stage {number}: target must be >= 0")
            stages.append(Stage(duration_s=seconds, target=count))
        return cls(kind="staged", mode=mode, stages=tuple(stages), max_vus=max_vus)

    @classmethod
    def default(cls, mode: Mode = "concurrency", *, max_vus: int | None = None) -> Self:
        """The default staged plan (:data:`DEFAULT_STAGES`), 4 minutes."""
        return cls.parse(DEFAULT_STAGES, mode=mode, max_vus=max_vus)

    @classmethod
    def fixed(cls, requests: int, concurrency: int) -> Self:
        """``requests`` requests by ``concurrency`` workers."""
        return cls(kind="fixed", requests=requests, concurrency=concurrency)

    def scaled(self, factor: float) -> Self:
        """Durations and targets (or requests and concurrency) times ``factor``.

        Targets stay at least 1 (a target of 0, a ramp-down, stays 0) and durations at
        least one second.
        """
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError("scale must be more than 0")

        def size(value: int) -> int:
            return 0 if value == 0 else max(1, round(value * factor))

        if self.kind == "fixed":
            assert self.requests is not None
            assert self.concurrency is not None
            return self.model_copy(
                update={
                    "requests": size(self.requests),
                    "concurrency": size(self.concurrency),
                }
            )
        stages = tuple(
            Stage(
                duration_s=max(_MIN_SCALED_DURATION, s.duration_s * factor),
                target=size(s.target),
            )
            for s in self.stages
        )
        max_vus = size(self.max_vus) if self.max_vus is not None else None
        return self.model_copy(update={"stages": stages, "max_vus": max_vus})

    # --- queries ---------------------------------------------------------------------

    @property
    def duration_s(self) -> float | None:
        """How long a staged plan runs (before the grace period); ``None`` for fixed."""
        if self.kind == "fixed":
            return None
        return sum(s.duration_s for s in self.stages)

    @property
    def peak(self) -> int:
        """The highest target (VUs or requests/s), or the fixed concurrency."""
        if self.kind == "fixed":
            assert self.concurrency is not None
            return self.concurrency
        return max(s.target for s in self.stages)

    @property
    def vus_cap(self) -> int:
        """Workers (concurrency) or requests in flight (rate) this plan may use at most."""
        if self.mode == "rate":
            return self.max_vus if self.max_vus is not None else max(50, 4 * self.peak)
        return self.peak

    def target_at(self, elapsed: float) -> float:
        """The target ``elapsed`` seconds into a staged plan (linear within a stage)."""
        level = 0.0
        start = 0.0
        for stage in self.stages:
            if elapsed < start + stage.duration_s:
                fraction = max(0.0, elapsed - start) / stage.duration_s
                return level + (stage.target - level) * fraction
            level = float(stage.target)
            start += stage.duration_s
        return level

    def stage_at(self, elapsed: float) -> int:
        """The 1-based stage running ``elapsed`` seconds in (the last one after the end)."""
        start = 0.0
        for number, stage in enumerate(self.stages, start=1):
            start += stage.duration_s
            if elapsed < start:
                return number
        return len(self.stages)

    def arrivals_until(self, elapsed: float) -> float:
        """Rate mode: requests due in the first ``elapsed`` seconds (the rate's integral)."""
        total = 0.0
        level = 0.0
        start = 0.0
        for stage in self.stages:
            span = min(stage.duration_s, max(0.0, elapsed - start))
            if span <= 0:
                break
            end_level = level + (stage.target - level) * span / stage.duration_s
            total += (level + end_level) / 2.0 * span
            level = float(stage.target)
            start += stage.duration_s
        return total

    def arrival_time(self, n: int) -> float | None:
        """Rate mode: when the ``n``-th request (1-based) is due; ``None`` if never."""
        needed = float(n)
        done = 0.0
        level = 0.0
        start = 0.0
        for stage in self.stages:
            area = (level + stage.target) / 2.0 * stage.duration_s
            # A tolerance for float round-off: a ramp whose area is 0.9999999999999996
            # still delivers its first request.
            if done + area >= needed - _AREA_EPSILON:
                # Solve level*t + slope*t**2/2 = needed - done (stable form).
                rest = needed - done
                slope = (stage.target - level) / stage.duration_s
                root = math.sqrt(max(0.0, level * level + 2.0 * slope * rest))
                denominator = level + root
                offset = 2.0 * rest / denominator if denominator > 0 else 0.0
                return start + min(stage.duration_s, offset)
            done += area
            level = float(stage.target)
            start += stage.duration_s
        return None

    def describe(self) -> str:
        """``"fixed: 2000 requests, concurrency 16"`` or ``"staged (concurrency): 30s:20, ..."``."""
        if self.kind == "fixed":
            return f"fixed: {self.requests} requests, concurrency {self.concurrency}"
        unit = "VUs" if self.mode == "concurrency" else "req/s"
        cap = f", at most {self.vus_cap} in flight" if self.mode == "rate" else ""
        stages = ", ".join(s.describe() for s in self.stages)
        duration = format_duration(self.duration_s or 0.0)
        return f"staged ({self.mode}, target in {unit}{cap}): {stages} ({duration})"
