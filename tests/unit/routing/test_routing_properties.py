"""Properties of routing: ``decide`` over generated policies and requests.

Policies are drawn from a small alphabet of providers and models so that chains share
targets and providers often, which is where reordering by preference can go wrong.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ccr import Complexity, RouteDecision, RouteRequest, RoutingPolicy, WorkspacePolicy
from ccr._models import split_target
from ccr._routing import decide

pytestmark = pytest.mark.property

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

PROVIDERS = ("up", "backup", "alt", "edge")
MODELS = ("small", "mid", "big", "xl")
TARGETS = tuple(f"{p},{m}" for p in PROVIDERS for m in MODELS)
ABSENT_PROVIDER = "ghost"  # a provider name no policy chain ever uses
TASKS = ("code_review", "architecture_design", "text_formatting", "sql/gen", "chat:fast", "general")
WORKSPACES = ("acme", "beta-1", "c.d")
COMPLEXITIES = tuple(Complexity)

WORKSPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TASK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")

chains = st.lists(st.sampled_from(TARGETS), min_size=1, max_size=5, unique=True).map(tuple)
preferences = st.none() | st.sampled_from((*PROVIDERS, ABSENT_PROVIDER))


@st.composite
def policies(draw: st.DrawFn) -> RoutingPolicy:
    """Valid policies: 1-3 chains, a task map, maybe a long-context rule, workspaces."""
    levels = draw(st.lists(st.sampled_from(COMPLEXITIES), min_size=1, max_size=3, unique=True))
    threshold = draw(st.none() | st.integers(min_value=1, max_value=300))
    return RoutingPolicy(
        chains={level: draw(chains) for level in levels},
        default_complexity=draw(st.sampled_from(levels)),
        tasks=draw(st.dictionaries(st.sampled_from(TASKS), st.sampled_from(COMPLEXITIES), max_size=4)),
        long_context_threshold=threshold,
        long_context_chain=draw(st.none() | chains) if threshold is not None else None,
        workspaces=draw(
            st.dictionaries(
                st.sampled_from(WORKSPACES),
                st.builds(WorkspacePolicy, preferred_provider=preferences),
                max_size=3,
            )
        ),
    )


texts = st.builds(
    lambda n, tail: "x" * n + tail,
    st.integers(min_value=0, max_value=1500),
    st.text(max_size=20),
)


@st.composite
def route_requests(draw: st.DrawFn) -> RouteRequest:
    """Valid requests: known and unknown workspaces and tasks, prompt or messages."""
    fields: dict[str, object] = {
        "workspace_id": draw(st.sampled_from((*WORKSPACES, "elsewhere"))),
        "task": draw(st.sampled_from((*TASKS, "unknown_task"))),
        "complexity": draw(st.none() | st.sampled_from(COMPLEXITIES)),
        "preferred_provider": draw(preferences),
        "system": draw(st.none() | texts),
    }
    if draw(st.booleans()):
        fields["prompt"] = draw(texts)
    else:
        content = st.one_of(
            texts,
            st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), min_size=1, max_size=3),
        )
        fields["messages"] = draw(
            st.lists(
                st.fixed_dictionaries({"role": st.sampled_from(("user", "assistant")), "content": content}),
                min_size=1,
                max_size=3,
            )
        )
    return RouteRequest.model_validate(fields)


# --- reference pieces ----------------------------------------------------------------


def candidate_chains(policy: RoutingPolicy) -> list[tuple[str, ...]]:
    """Every chain decide may start from: the policy's chains and the long-context chain."""
    found = list(policy.chains.values())
    if policy.long_context_chain is not None:
        found.append(policy.long_context_chain)
    return found


def effective_preference(request: RouteRequest, policy: RoutingPolicy) -> str | None:
    """The request's preferred provider, else the workspace's."""
    if request.preferred_provider is not None:
        return request.preferred_provider
    workspace = policy.workspaces.get(request.workspace_id)
    return workspace.preferred_provider if workspace is not None else None


def prefer(chain: tuple[str, ...], provider: str | None) -> tuple[str, ...]:
    """A stable partition: the provider's targets first, every other order kept."""
    if provider is None:
        return chain
    front = tuple(t for t in chain if split_target(t)[0] == provider)
    return front + tuple(t for t in chain if split_target(t)[0] != provider)


def reference_base(request: RouteRequest, policy: RoutingPolicy) -> tuple[Complexity, tuple[str, ...]]:
    """The first rule that applies: explicit, task map, long context, default."""
    long_context = (
        policy.long_context_threshold is not None
        and request.size.typical_tokens > policy.long_context_threshold
    )
    if request.complexity is not None:
        level = request.complexity
    elif request.task in policy.tasks:
        level = policy.tasks[request.task]
    elif long_context:
        chain = policy.long_context_chain
        if chain is None:
            chain = policy.chains.get(Complexity.HIGH, policy.chains[policy.default_complexity])
        return Complexity.HIGH, chain
    else:
        level = policy.default_complexity
    return level, policy.chains.get(level, policy.chains[policy.default_complexity])


# --- properties ----------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_chain_is_a_policy_chain_possibly_reordered_by_preference(policy, request):
    """The chain is one of the policy's chains, or that chain with the preferred provider first."""
    decision = decide(request, policy)
    preferred = effective_preference(request, policy)
    assert any(decision.chain == prefer(base, preferred) for base in candidate_chains(policy))


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_chain_is_a_permutation_of_a_policy_chain(policy, request):
    """The chain neither drops, adds nor repeats a target of the chain it came from."""
    chain = decide(request, policy).chain
    assert len(set(chain)) == len(chain)
    assert any(sorted(chain) == sorted(base) for base in candidate_chains(policy))


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_preferred_targets_lead_and_both_groups_keep_their_order(policy, request):
    """The preferred provider's targets come first; each group keeps its relative order."""
    chain = decide(request, policy).chain
    preferred = effective_preference(request, policy)
    mine = [t for t in chain if split_target(t)[0] == preferred]
    assert list(chain[: len(mine)]) == mine
    bases = [b for b in candidate_chains(policy) if sorted(b) == sorted(chain)]
    assert any(
        mine == [t for t in base if split_target(t)[0] == preferred]
        and list(chain[len(mine) :]) == [t for t in base if split_target(t)[0] != preferred]
        for base in bases
    )


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_request_preference_wins_over_the_workspace(policy, request):
    """With both set, the request's preferred provider is the one moved to the front."""
    workspace = policy.workspaces.get(request.workspace_id)
    chain = decide(request, policy).chain
    if request.preferred_provider is not None and any(
        split_target(t)[0] == request.preferred_provider for t in chain
    ):
        assert split_target(chain[0])[0] == request.preferred_provider
    elif request.preferred_provider is None and workspace is not None:
        pref = workspace.preferred_provider
        if pref is not None and any(split_target(t)[0] == pref for t in chain):
            assert split_target(chain[0])[0] == pref


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_decide_matches_the_first_applicable_rule(policy, request):
    """Complexity and chain follow explicit > task map > long context > default."""
    level, base = reference_base(request, policy)
    decision = decide(request, policy)
    assert decision.complexity is level
    assert decision.chain == prefer(base, effective_preference(request, policy))


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_decide_is_deterministic(policy, request):
    """Equal inputs, even rebuilt from their dumps, give equal decisions."""
    first = decide(request, policy)
    again = decide(
        RouteRequest.model_validate(request.model_dump()),
        RoutingPolicy.model_validate(policy.model_dump()),
    )
    assert first == decide(request, policy)
    assert first == again


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_task_label_is_bounded(policy, request):
    """The label is a task the policy knows, 'general', or 'other'; nothing else."""
    label = decide(request, policy).task_label
    assert label in {*policy.tasks, "general", "other"}
    expected = request.task if request.task in policy.tasks or request.task == "general" else "other"
    assert label == expected


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_reason_is_a_non_empty_sentence(policy, request):
    """The reason is one non-empty line of printable text."""
    reason = decide(request, policy).reason
    assert isinstance(reason, str)
    assert reason.strip() == reason
    assert reason
    assert all(unicodedata.category(ch)[0] != "C" for ch in reason)


@PROPERTY_SETTINGS
@given(policies(), route_requests())
def test_decision_validates_as_a_route_decision(policy, request):
    """decide builds without validation; what it builds still passes validation."""
    decision = decide(request, policy)
    assert RouteDecision.model_validate(decision.model_dump()) == decision
    assert decision.estimated_input_tokens == request.size.typical_tokens


def validate_request(fields: dict) -> tuple[RouteRequest | None, ValidationError | None]:
    """The request, or the ValidationError it raised (any other exception propagates)."""
    try:
        return RouteRequest.model_validate(fields), None
    except ValidationError as exc:
        return None, exc


# --- arbitrary text for the fields that reach Redis keys, labels and logs -------------

hostile_text = st.one_of(
    st.text(max_size=200),
    st.from_regex(WORKSPACE_RE, fullmatch=True),
    st.builds(
        lambda a, ch, b: a + ch + b,
        st.from_regex(WORKSPACE_RE, fullmatch=True),
        st.sampled_from("*?[]{}\n\r\0 \t:/\\'\"é🙂\u200b\u202e"),
        st.text(max_size=5),
    ),
    st.integers(min_value=120, max_value=20_000).map(lambda n: "a" * n),
)


@pytest.mark.parametrize(("field", "pattern"), [("workspace_id", WORKSPACE_RE), ("task", TASK_RE)])
@PROPERTY_SETTINGS
@given(value=hostile_text)
def test_arbitrary_text_is_accepted_only_in_the_safe_alphabet(field, pattern, value):
    """Any text is either accepted (and then safe) or a ValidationError naming the field."""
    request, error = validate_request({"workspace_id": "acme", "prompt": "hi", field: value})
    if error is not None:
        assert [e["loc"] for e in error.errors()] == [(field,)]
        assert pattern.fullmatch(value) is None
    else:
        assert pattern.fullmatch(getattr(request, field))


@PROPERTY_SETTINGS
@given(policies(), st.text(min_size=1, max_size=60))
def test_reason_stays_one_printable_line_for_any_accepted_preference(policy, preferred):
    """A preferred provider that is accepted never puts control characters in the reason."""
    request, error = validate_request(
        {"workspace_id": "acme", "prompt": "hi", "preferred_provider": preferred}
    )
    if error is not None:
        assert [e["loc"] for e in error.errors()] in ([("preferred_provider",)], [()])
        return
    reason = decide(request, policy).reason
    assert all(unicodedata.category(ch)[0] != "C" for ch in reason)
