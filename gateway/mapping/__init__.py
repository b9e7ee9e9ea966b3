"""The mapping engine: load, validate and compile channel mappings, and run them.

Public surface (docs/internals.md section 1; the language is docs/mappings.md):
`load_mapping`, `load_mapping_dir`, `run_inline_tests`, `CompiledMapping` and the
values it exchanges with the runtime.
"""

from __future__ import annotations

from gateway.mapping.directory import load_mapping_dir
from gateway.mapping.inline_tests import run_inline_tests
from gateway.mapping.mapping import CompiledMapping, load_mapping
from gateway.mapping.model import (
    AttachmentLimits,
    AuthSpec,
    ChannelSpec,
    FetchedFile,
    HandshakeReply,
    Ignored,
    InboundCall,
    InboundIO,
    InboundItem,
    LookupOutcome,
    NoRoute,
    OutboundContext,
    OutboundPlan,
    PlatformRequest,
    PlatformResponse,
    PlatformSpec,
    StateValue,
    TestFailure,
    ThreadState,
    UploadIO,
    WebhookSpec,
)

__all__ = [
    "AttachmentLimits",
    "AuthSpec",
    "ChannelSpec",
    "CompiledMapping",
    "FetchedFile",
    "HandshakeReply",
    "Ignored",
    "InboundCall",
    "InboundIO",
    "InboundItem",
    "LookupOutcome",
    "NoRoute",
    "OutboundContext",
    "OutboundPlan",
    "PlatformRequest",
    "PlatformResponse",
    "PlatformSpec",
    "StateValue",
    "TestFailure",
    "ThreadState",
    "UploadIO",
    "WebhookSpec",
    "load_mapping",
    "load_mapping_dir",
    "run_inline_tests",
]
