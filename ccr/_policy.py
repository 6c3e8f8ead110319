"""Routing policies: which ordered chain of CCR targets serves which kind of task.

A policy comes from Python, from a TOML/JSON file, or is derived from CCR's own
``Router`` section so that a user with no policy file still gets sensible chains.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ccr._errors import ConfigurationError
from ccr._models import MAX_TOKENS, Complexity, ProviderName, Target, TaskName, WorkspaceId, split_target

_MAX_POLICY_BYTES = 2 * 1024 * 1024

# CCR's Router keys and the complexity each one serves.
_CCR_ROUTES: dict[str, Complexity] = {
    "background": Complexity.LOW,
    "default": Complexity.STANDARD,
    "think": Complexity.HIGH,
}
# Fallback order after a chain's own route: the general-purpose route first.
_CCR_FALLBACK_ORDER = ("default", "think", "longContext", "background")


class WorkspacePolicy(BaseModel):
    """Per-workspace overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preferred_provider: ProviderName | None = None
    daily_token_limit: int | None = Field(default=None, ge=0, le=MAX_TOKENS)


class RoutingPolicy(BaseModel):
    """Chains per complexity, task mapping, long-context rule, per-workspace settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chains: dict[Complexity, tuple[Target, ...]]
    tasks: dict[TaskName, Complexity] = Field(default_factory=dict)
    default_complexity: Complexity = Complexity.STANDARD
    long_context_threshold: int | None = Field(default=None, gt=0)
    long_context_chain: tuple[Target, ...] | None = None
    think_chain: tuple[Target, ...] | None = Field(
        default=None,
        description="The chain of requests that ask for thinking (else the high chain).",
    )
    workspaces: dict[WorkspaceId, WorkspacePolicy] = Field(default_factory=dict)
    timeouts: dict[Target, float] = Field(default_factory=dict)
    retries: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Retries of a target after 429/503/529 (overrides the settings' retries).",
    )

    @field_validator("chains")
    @classmethod
    def _chains_non_empty(cls, value: dict[Complexity, tuple[str, ...]]) -> dict[Complexity, tuple[str, ...]]:
        if not value:
            raise ValueError("at least one chain (low, standard or high) is required")
        for complexity, chain in value.items():
            if not chain:
                raise ValueError(f"chain {complexity.value!r} must list at least one target")
            if len(set(chain)) != len(chain):
                raise ValueError(f"chain {complexity.value!r} lists a target twice")
        return value

    @field_validator("long_context_chain", "think_chain")
    @classmethod
    def _optional_chain_non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("must list at least one target when given")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("lists a target twice")
        return value

    @field_validator("timeouts")
    @classmethod
    def _timeouts_positive(cls, value: dict[str, float]) -> dict[str, float]:
        for target, seconds in value.items():
            if not seconds > 0:
                raise ValueError(f"timeout for {target!r} must be > 0 seconds")
        return value

    @model_validator(mode="after")
    def _default_has_chain(self) -> RoutingPolicy:
        if self.default_complexity not in self.chains:
            raise ValueError(
                f"default_complexity {self.default_complexity.value!r} has no chain; "
                f"chains are given for {sorted(c.value for c in self.chains)}"
            )
        if self.long_context_chain is not None and self.long_context_threshold is None:
            raise ValueError("long_context_chain needs long_context_threshold")
        return self

    # --- loaders -------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> RoutingPolicy:
        """Load a policy from a ``.toml`` or ``.json`` file; errors name the file and field."""
        path = Path(path)
        if path.suffix not in {".toml", ".json"}:
            raise ConfigurationError(f"policy file {path}: use a .toml or .json file")
        try:
            size = path.stat().st_size
            if size > _MAX_POLICY_BYTES:
                raise ConfigurationError(f"policy file {path}: {size} bytes is too large")
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"policy file {path}: cannot read ({exc.strerror})") from None
        try:
            if path.suffix == ".toml":
                import tomllib

                data: Any = tomllib.loads(raw.decode("utf-8"))
            else:
                data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            # ValueError covers decode errors, bad UTF-8 and over-long integers.
            reason = str(exc).splitlines()[0][:200] if isinstance(exc, ValueError) else "nested too deeply"
            raise ConfigurationError(f"policy file {path}: not valid {path.suffix[1:]}: {reason}") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"policy file {path}: the top level must be a table/object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            # `from None`: pydantic's error echoes input values, and a file copied from CCR's
            # config.json holds provider keys. The message names the fields; that is enough.
            raise ConfigurationError(f"policy file {path}: {_describe(exc)}") from None
        except RecursionError:
            raise ConfigurationError(f"policy file {path}: nested too deeply") from None

    @classmethod
    def from_ccr_config(cls, config: Mapping[str, Any]) -> RoutingPolicy:
        """Derive chains from CCR's ``Router``: low=background, standard=default, high=think;
        thinking requests take the think route, long contexts the longContext route.

        Each chain continues with the other distinct routes, so a failing route falls back
        to the rest of what this CCR is configured for. Only the ``Router`` section is
        read: provider entries (and their api keys) are never looked at.
        """
        router = config.get("Router")
        if not isinstance(router, Mapping) or not isinstance(router.get("default"), str):
            raise ConfigurationError("CCR config has no Router.default route to derive a policy from")
        routes: dict[str, str] = {}
        for key in ("default", "background", "think", "longContext"):
            value = router.get(key)
            if isinstance(value, str) and value.count(",") == 1 and all(value.split(",")):
                routes[key] = value

        def chain_from(first: str) -> tuple[str, ...]:
            ordered = [routes[first]] + [routes[k] for k in _CCR_FALLBACK_ORDER if k in routes]
            return tuple(dict.fromkeys(ordered))

        chains = {complexity: chain_from(key) for key, complexity in _CCR_ROUTES.items() if key in routes}
        threshold = router.get("longContextThreshold")
        long_chain = chain_from("longContext") if "longContext" in routes else None
        usable_threshold = type(threshold) is int and threshold > 0  # not a bool, not a float
        try:
            return cls(
                chains=chains,
                long_context_threshold=threshold if usable_threshold else None,
                long_context_chain=long_chain if usable_threshold else None,
                think_chain=chain_from("think") if "think" in routes else None,
            )
        except ValidationError as exc:
            raise ConfigurationError(f"CCR Router section: {_describe(exc)}") from None

    # --- queries -----------------------------------------------------------------

    def targets(self) -> list[str]:
        """Every distinct target the policy can route to, in chain order."""
        seen: dict[str, None] = {}
        for complexity in Complexity:
            for target in self.chains.get(complexity, ()):
                seen[target] = None
        for target in (*(self.long_context_chain or ()), *(self.think_chain or ())):
            seen[target] = None
        return list(seen)

    def providers(self) -> list[str]:
        """Every distinct provider name, in chain order."""
        return list(dict.fromkeys(split_target(t)[0] for t in self.targets()))

    def limit_for(self, workspace_id: str) -> int | None:
        """The policy's daily token limit for a workspace, if it sets one."""
        workspace = self.workspaces.get(workspace_id)
        return workspace.daily_token_limit if workspace else None


def _describe(exc: ValidationError) -> str:
    """A one-line summary naming each bad field."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
