"""The result of a verify run as data: one :class:`CheckResult` per check, and the counts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ccr import EndpointState

__all__ = ["CheckResult", "CheckStatus", "VerifyReport"]


class CheckStatus(StrEnum):
    """The verdict of one check."""

    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    SKIP = "SKIP"


class CheckResult(BaseModel):
    """One named check: its verdict, a one-line detail (or reason) and how long it took."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: CheckStatus
    detail: str
    duration_ms: float = 0.0


class VerifyReport(BaseModel):
    """Every check, in the order of ``CHECK_NAMES``, and the counts."""

    model_config = ConfigDict(frozen=True)

    url: str
    checks: list[CheckResult]
    requests_sent: int = 0
    """Model calls made (each ``max_tokens`` <= ``VERIFY_MAX_TOKENS``)."""
    started_at: datetime
    endpoints: dict[str, EndpointState] = Field(default_factory=dict)
    """``url -> up | down | refused`` of every configured CCR endpoint, as the reachable
    check found them (empty if it did not finish)."""

    @property
    def passed(self) -> int:
        return sum(c.status is CheckStatus.PASS for c in self.checks)

    @property
    def failed(self) -> int:
        return sum(c.status is CheckStatus.FAIL for c in self.checks)

    @property
    def skipped(self) -> int:
        return sum(c.status is CheckStatus.SKIP for c in self.checks)

    @property
    def ok(self) -> bool:
        """Nothing failed (skips are fine)."""
        return self.failed == 0

    def check(self, name: str) -> CheckResult:
        """The result of the check called ``name``."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)
