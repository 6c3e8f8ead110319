"""``verify``: a fixed list of named checks against a live CCR, returned as data.

::

    from ccr import CCRSettings
    from ccr.ops.verify import render_text, run_checks

    report = await run_checks(CCRSettings(url="http://127.0.0.1:3456"))
    print(render_text(report))  # PASS reachable ... / 8 passed, 0 failed
    assert report.ok

:func:`run_checks` runs the checks (see ``_checks.py`` for the list and what each
spends), :class:`VerifyReport` holds their results, and :func:`render_text`,
:func:`render_json` and :func:`render_junit` turn a report into the three outputs of
``ccr-client verify``.
"""

from ccr.ops.verify._checks import (
    CHECK_NAMES,
    UNKNOWN_TARGET,
    VERIFY_MAX_TOKENS,
    run_checks,
)
from ccr.ops.verify._render import render_json, render_junit, render_text, summary_line, to_json_dict
from ccr.ops.verify._report import CheckResult, CheckStatus, VerifyReport

__all__ = [
    "CHECK_NAMES",
    "UNKNOWN_TARGET",
    "VERIFY_MAX_TOKENS",
    "CheckResult",
    "CheckStatus",
    "VerifyReport",
    "render_json",
    "render_junit",
    "render_text",
    "run_checks",
    "summary_line",
    "to_json_dict",
]
