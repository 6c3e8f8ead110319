"""Routing decisions: a pure function of (request, policy), table-driven."""

from __future__ import annotations

import pytest

from ccr._models import Complexity, RouteRequest
from ccr._policy import RoutingPolicy, WorkspacePolicy
from ccr._routing import decide, reservation_estimate

POLICY = RoutingPolicy(
    chains={
        "low": ["up,small"],
        "standard": ["up,mid", "backup,mid"],
        "high": ["up,big", "up,mid", "backup,big"],
    },
    tasks={"architecture_design": "high", "text_formatting": "low"},
    long_context_threshold=1000,
    long_context_chain=["up,long", "backup,long"],
    workspaces={"beta": WorkspacePolicy(preferred_provider="backup")},
)


def req(**fields):
    fields.setdefault("workspace_id", "acme")
    fields.setdefault("prompt", "hello")
    return RouteRequest(**fields)


@pytest.mark.parametrize(
    ("fields", "complexity", "chain", "reason_part"),
    [
        (
            {"complexity": "high"},
            "high",
            ("up,big", "up,mid", "backup,big"),
            "given by the request",
        ),
        (
            {"task": "architecture_design"},
            "high",
            ("up,big", "up,mid", "backup,big"),
            "maps to 'high'",
        ),
        ({"task": "text_formatting"}, "low", ("up,small",), "maps to 'low'"),
        ({"task": "code_review"}, "standard", ("up,mid", "backup,mid"), "default complexity"),
        (
            {"task": "code_review", "prompt": "x" * 8000},
            "high",
            ("up,long", "backup,long"),
            "long-context",
        ),
        (
            {"task": "text_formatting", "complexity": "standard"},
            "standard",
            ("up,mid", "backup,mid"),
            "request",
        ),
    ],
)
def test_complexity_rules_in_order(fields, complexity, chain, reason_part):
    """Explicit complexity, then task mapping, then long context, then the default."""
    decision = decide(req(**fields), POLICY)
    assert decision.complexity == Complexity(complexity)
    assert decision.chain == chain
    assert reason_part in decision.reason


def test_explicit_complexity_beats_long_context():
    """An explicit complexity wins even for a long prompt (the caller knows best)."""
    decision = decide(req(complexity="low", prompt="x" * 8000), POLICY)
    assert decision.chain == ("up,small",)


def test_preferred_provider_moves_its_targets_first_keeping_order():
    """The request's preferred provider goes first; the rest keep their order."""
    decision = decide(req(complexity="high", preferred_provider="backup"), POLICY)
    assert decision.chain == ("backup,big", "up,big", "up,mid")
    assert "preferred by the request" in decision.reason


def test_workspace_preference_applies_when_request_has_none():
    """A workspace's preferred provider from the policy applies by default."""
    decision = decide(req(workspace_id="beta"), POLICY)
    assert decision.chain == ("backup,mid", "up,mid")
    assert "workspace policy" in decision.reason


def test_request_preference_beats_workspace_preference():
    """The request's own preference overrides the workspace's."""
    decision = decide(req(workspace_id="beta", preferred_provider="up"), POLICY)
    assert decision.chain == ("up,mid", "backup,mid")


def test_unknown_preferred_provider_keeps_chain_and_says_so():
    """A preferred provider with no target in the chain changes nothing, visibly."""
    decision = decide(req(preferred_provider="nobody"), POLICY)
    assert decision.chain == ("up,mid", "backup,mid")
    assert "has no target" in decision.reason


def test_missing_chain_falls_back_to_default_chain():
    """A complexity without a chain uses the default complexity's chain."""
    policy = RoutingPolicy(chains={"standard": ["up,mid"]})
    decision = decide(req(complexity="high"), policy)
    assert decision.chain == ("up,mid",)
    assert "no 'high' chain" in decision.reason


def test_task_label_is_bounded():
    """Tasks outside the policy become 'other' for metrics; known ones stay."""
    assert decide(req(task="architecture_design"), POLICY).task_label == "architecture_design"
    assert decide(req(task="general"), POLICY).task_label == "general"
    assert decide(req(task="made_up_task_123"), POLICY).task_label == "other"


def test_decide_is_pure():
    """The same request and policy always give the same decision."""
    request = req(task="architecture_design")
    assert decide(request, POLICY) == decide(request, POLICY)


def test_reservation_estimate_bounds_input_and_output():
    """The reservation covers max_tokens plus a generous bound on the input."""
    request = req(prompt="word " * 100, max_tokens=50)
    assert reservation_estimate(request) >= 50 + 100
    assert req(prompt="abcd" * 10).size.typical_tokens == 10


def test_reservation_estimate_counts_multibyte_text_by_bytes():
    """Non-ASCII text is bounded by its UTF-8 size, not its character count."""
    request = req(prompt="漢" * 100, max_tokens=1)
    assert reservation_estimate(request) >= 150
