"""Routing decisions: a pure function of (request, policy), no I/O.

Complexity is chosen by the first rule that applies: the request's explicit value, the
policy's task mapping, the long-context rule, the policy default. A request that asks
for thinking takes the policy's think chain (else the high chain). A pinned ``target``
is the whole chain. Otherwise a preferred provider (the request's, else the
workspace's) moves that provider's targets to the front of the chain, keeping the order.

Token figures come from :mod:`ccr._estimate`, which reads every block of the request.
"""

from __future__ import annotations

from ccr._estimate import reservation_estimate
from ccr._models import Complexity, RouteDecision, RouteRequest, split_target, trusted
from ccr._policy import RoutingPolicy

__all__ = ["decide", "reservation_estimate"]


def decide(request: RouteRequest, policy: RoutingPolicy) -> RouteDecision:
    """Pick the chain for a request and say, in a sentence, which rule chose it."""
    estimated = request.size.typical_tokens
    long_context = policy.long_context_threshold is not None and estimated > policy.long_context_threshold
    chain: tuple[str, ...] | None = None
    if request.complexity is not None:
        complexity = request.complexity
        reason = f"complexity '{complexity.value}' given by the request"
    elif request.task in policy.tasks:
        complexity = policy.tasks[request.task]
        reason = f"task '{request.task}' maps to '{complexity.value}' in the policy"
    elif long_context:
        complexity = Complexity.HIGH
        chain = policy.long_context_chain
        reason = (
            f"about {estimated} input tokens exceed the long-context threshold "
            f"{policy.long_context_threshold}"
        )
    else:
        complexity = policy.default_complexity
        reason = f"no rule matched task '{request.task}'; default complexity '{complexity.value}'"
    if request.thinks and chain is None:  # a long context wins, as in CCR's own router
        if policy.think_chain is not None:
            chain = policy.think_chain
            reason += "; thinking is on: the think chain"
        elif Complexity.HIGH in policy.chains:
            chain = policy.chains[Complexity.HIGH]
            reason += "; thinking is on and the policy has no think chain: the high chain"
    if chain is None:
        chain = policy.chains.get(complexity)
        if chain is None:
            chain = policy.chains[policy.default_complexity]
            reason += f"; no '{complexity.value}' chain, using '{policy.default_complexity.value}'"

    preferred, who = _preferred(request, policy)
    if request.target is not None:
        chain = (request.target,)
        reason = f"target '{request.target}' pinned by the request (complexity '{complexity.value}')"
    elif preferred is not None:
        front = tuple(t for t in chain if split_target(t)[0] == preferred)
        if front:
            chain = front + tuple(t for t in chain if split_target(t)[0] != preferred)
            reason += f"; provider '{preferred}' preferred by the {who}, moved to the front"
        else:
            reason += f"; preferred provider '{preferred}' has no target in this chain"

    task_label = request.task if request.task in policy.tasks or request.task == "general" else "other"
    return trusted(
        RouteDecision,
        complexity=complexity,
        chain=chain,
        reason=reason,
        task_label=task_label,
        estimated_input_tokens=estimated,
    )


def _preferred(request: RouteRequest, policy: RoutingPolicy) -> tuple[str | None, str]:
    if request.preferred_provider is not None:
        return request.preferred_provider, "request"
    workspace = policy.workspaces.get(request.workspace_id)
    if workspace is not None and workspace.preferred_provider is not None:
        return workspace.preferred_provider, "workspace policy"
    return None, ""
