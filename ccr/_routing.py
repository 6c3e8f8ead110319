"""Routing decisions: a pure function of (request, policy), no I/O.

Complexity is chosen by the first rule that applies: the request's explicit value, the
policy's task mapping, the long-context rule, the policy default. A preferred provider
(the request's, else the workspace's) moves that provider's targets to the front of the
chain, keeping the order otherwise.
"""

from __future__ import annotations

from ccr._models import Complexity, RouteDecision, RouteRequest, split_target, trusted
from ccr._policy import RoutingPolicy

_MESSAGE_OVERHEAD = 4  # role markers and separators per message


def estimate_tokens(text: str) -> int:
    """A typical-case token estimate (about four characters a token), for routing."""
    return (len(text) + 3) // 4


def reservation_estimate(request: RouteRequest) -> int:
    """An upper-bound estimate of a call's tokens, for quota reservations.

    Reserving too much costs nothing (settle replaces it by the real usage); reserving
    too little could let concurrent calls overspend a budget. Real tokenizers spend at
    least two bytes of UTF-8 per token on the text we send, so half the byte count is a
    safe ceiling for the input; the output can be at most ``max_tokens``.
    """
    text = request.prompt_text()
    messages = len(request.messages) if request.messages is not None else 1
    input_bound = (len(text.encode("utf-8")) + 1) // 2 + _MESSAGE_OVERHEAD * (messages + 1)
    return input_bound + request.max_tokens


def decide(request: RouteRequest, policy: RoutingPolicy) -> RouteDecision:
    """Pick the chain for a request and say, in a sentence, which rule chose it."""
    estimated = estimate_tokens(request.prompt_text())
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
