"""A :class:`VerifyReport` as text lines, a JSON object or a JUnit XML report."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any
from xml.etree import ElementTree

from ccr.ops.verify._report import CheckStatus, VerifyReport

__all__ = ["render_json", "render_junit", "render_text", "summary_line", "to_json_dict"]

_SUITE = "ccr-client verify"


def summary_line(report: VerifyReport) -> str:
    """``N passed, M failed`` (``, K skipped`` when any were skipped)."""
    line = f"{report.passed} passed, {report.failed} failed"
    return line + (f", {report.skipped} skipped" if report.skipped else "")


def render_text(report: VerifyReport) -> str:
    """One line per check (``PASS name  detail``), then the summary line."""
    width = max((len(c.name) for c in report.checks), default=0)
    lines = [f"{c.status.value} {c.name.ljust(width)}  {c.detail}" for c in report.checks]
    lines.append(summary_line(report))
    return "\n".join(lines)


def to_json_dict(report: VerifyReport) -> dict[str, Any]:
    """``{url, endpoints, checks: [{name, status, detail, duration_ms}], passed, failed, skipped,
    requests_sent}``; ``endpoints`` maps each configured CCR URL to ``up``, ``down`` or ``refused``."""
    return {
        "url": report.url,
        "endpoints": {url: state.value for url, state in report.endpoints.items()},
        "checks": [
            {
                "name": c.name,
                "status": c.status.value,
                "detail": c.detail,
                "duration_ms": round(c.duration_ms, 3),
            }
            for c in report.checks
        ],
        "passed": report.passed,
        "failed": report.failed,
        "skipped": report.skipped,
        "requests_sent": report.requests_sent,
    }


def render_json(report: VerifyReport) -> str:
    """:func:`to_json_dict`, indented."""
    return json.dumps(to_json_dict(report), indent=2)


def render_junit(report: VerifyReport) -> str:
    """A JUnit XML report: one ``testsuite``, one ``testcase`` per check.

    A FAIL carries a ``<failure>``, a SKIP a ``<skipped>`` (both with the reason), a PASS
    its detail in ``<system-out>``.
    """
    total_s = sum(c.duration_ms for c in report.checks) / 1000.0
    counts = {
        "tests": str(len(report.checks)),
        "failures": str(report.failed),
        "errors": "0",
        "skipped": str(report.skipped),
        "time": f"{total_s:.3f}",
    }
    suites = ElementTree.Element("testsuites", {"name": _SUITE, **counts})
    timestamp = report.started_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    suite = ElementTree.SubElement(suites, "testsuite", {"name": _SUITE, **counts, "timestamp": timestamp})
    properties = ElementTree.SubElement(suite, "properties")
    ElementTree.SubElement(properties, "property", name="ccr.url", value=report.url)
    ElementTree.SubElement(properties, "property", name="requests_sent", value=str(report.requests_sent))
    for result in report.checks:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname="ccr.verify",
            name=result.name,
            time=f"{result.duration_ms / 1000.0:.3f}",
        )
        if result.status is CheckStatus.FAIL:
            failure = ElementTree.SubElement(case, "failure", message=result.detail)
            failure.text = result.detail
        elif result.status is CheckStatus.SKIP:
            ElementTree.SubElement(case, "skipped", message=result.detail)
        else:
            ElementTree.SubElement(case, "system-out").text = result.detail
    ElementTree.indent(suites)
    body = ElementTree.tostring(suites, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
