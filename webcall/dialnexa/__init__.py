"""The DialNexa API: client, retry policy, tolerant models, and webhook signatures."""

from .client import DialNexaClient
from .models import (
    AgentInfo,
    CallRecord,
    MediaDescriptor,
    MediaUpdate,
    PhoneCall,
    WebCallSession,
    WebhookRecord,
    WhipAnswer,
)
from .retry import Failure, RetryPolicy

__all__ = [
    "AgentInfo",
    "CallRecord",
    "DialNexaClient",
    "Failure",
    "MediaDescriptor",
    "MediaUpdate",
    "PhoneCall",
    "RetryPolicy",
    "WebCallSession",
    "WebhookRecord",
    "WhipAnswer",
]
