"""Shared values of the client.anthropic() unit tests (imported by their conftest and tests)."""

from __future__ import annotations

import json
from collections import Counter

from ccr import CCRSettings, RoutingPolicy
from ccr._events import QuotaStepStarted, RouteEnded, RouteStarted

SAY_HI = [{"role": "user", "content": "hi"}]
TOOLS = [
    {
        "name": "lookup",
        "description": "Look a word up",
        "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    }
]
PROVIDER_POLICY = RoutingPolicy(chains={"standard": ["up,mid", "backup,mid"], "low": ["up,small"]})


def no_retries() -> dict:
    """Settings that make one try per target (where the client has per-target retries)."""
    return {"retries": 0} if "retries" in CCRSettings.model_fields else {}


class Recorder:
    """A hook counting route events and quota steps: one call must be one of each."""

    events = frozenset({RouteStarted, RouteEnded, QuotaStepStarted})

    def __init__(self) -> None:
        self.routes_started = 0
        self.routes_ended = 0
        self.quota_ops: Counter[str] = Counter()

    def __call__(self, event) -> None:
        if isinstance(event, RouteStarted):
            self.routes_started += 1
        elif isinstance(event, RouteEnded):
            self.routes_ended += 1
        else:
            self.quota_ops[event.op] += 1


def sse_story(*pieces: str) -> list[bytes]:
    """CCR's SSE for a text answer made of ``pieces`` (usage 0/0, as CCR streams it)."""

    def sse(payload: dict) -> bytes:
        return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()

    usage = {"input_tokens": 0, "output_tokens": 0}
    return [
        sse({"type": "message_start", "message": {"id": "msg_s", "model": "mid", "usage": usage}}),
        sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        *(
            sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
            for p in pieces
        ),
        sse({"type": "content_block_stop", "index": 0}),
        sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}),
        sse({"type": "message_stop"}),
    ]
