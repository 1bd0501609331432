"""segmentation (3007): splits a conversation into topic segments and scores its traits.

    POST /api/v1/segmentation/analyze   {"messages": [{"role": "user", "content": "..."}, ...]}
    GET  /api/v1/segmentation/status    analyses so far, messages analysed, when the last ran

    $ curl -sd '{"messages": [{"role": "user", "content": "Fix the api test"}]}' localhost:3007/api/v1/segmentation/analyze
    {"ok": true, "segments": [{"start": 0, "end": 0, "topic": "code", "messages": 1}],
     "topics": ["code"], "traits": {"curiosity": 0.0, "verbosity": 0.08, "technicality": 1.0,
     "positivity": 0.5, "directness": 1.0}, "messageCount": 1, "traceId": "..."}

Deterministic and offline: each message gets the topic whose keyword lexicon it hits
most (ties go to the lexicon listed first, no hits is "general"); consecutive messages
with the same topic form one segment. The analysis runs in a worker thread, so a large
conversation does not stall the other requests. Traits are simple counts, each 0..1:

- curiosity: share of messages containing "?"
- verbosity: mean words per message / 50, capped at 1
- technicality: share of words from the code and operations lexicons, x5, capped at 1
- positivity: 0.5 + 0.5 x (positive - negative) / (positive + negative) words; 0.5 with neither
- directness: share of user messages starting with an imperative verb
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import ApiError, Field, check_fields, ok, read_json
from tooloo_cli.services.service import Service, build_app

MAX_MESSAGES = 1000
ROLES = ("user", "assistant", "system")
GENERAL = "general"
MESSAGE_FIELDS = {"role": Field(str, choices=ROLES), "content": Field(str)}

TOPIC_LEXICONS: dict[str, frozenset[str]] = {
    "code": frozenset("python function bug error test api deploy code class method compile debug exception "
                      "library refactor commit merge variable script stack trace".split()),
    "planning": frozenset("plan roadmap deadline milestone priority schedule goal scope estimate sprint "
                          "timeline task backlog quarter".split()),
    "learning": frozenset("learn study explain understand course tutorial lesson practice concept teach "
                          "book exercise example".split()),
    "operations": frozenset("server latency outage monitor scale incident uptime alert cpu memory load "
                            "cluster container kubernetes database backup".split()),
}
TECHNICAL_WORDS = TOPIC_LEXICONS["code"] | TOPIC_LEXICONS["operations"]
TECHNICALITY_SCALE = 5  # a fifth of the words being technical already reads as fully technical
VERBOSE_WORDS = 50

POSITIVE_WORDS = frozenset("good great thanks thank excellent love nice helpful works perfect awesome glad "
                           "happy clear".split())
NEGATIVE_WORDS = frozenset("bad broken wrong fail fails failing hate terrible slow confusing annoying "
                           "worse stuck problem".split())
IMPERATIVE_VERBS = frozenset("add build change check create delete explain fix give help list make move "
                             "remove run send show stop tell update use write find deploy describe".split())

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    @cached_property
    def words(self) -> tuple[str, ...]:
        # Split on first use, which is in the analysis's worker thread, not on the event loop.
        return words_of(self.content)


def words_of(text: str) -> tuple[str, ...]:
    return tuple(WORD.findall(text.lower()))


def forms_of(word: str) -> set[str]:
    """The word and its root without a plural or tense ending, so "deploying" matches "deploy"."""
    forms = {word}
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            forms.add(word[: -len(suffix)])
    return forms


def count_hits(words: Iterable[str], lexicon: frozenset[str]) -> int:
    return sum(1 for word in words if forms_of(word) & lexicon)


def topic_of(words: tuple[str, ...]) -> str:
    best, best_hits = GENERAL, 0
    for topic, lexicon in TOPIC_LEXICONS.items():
        hits = count_hits(words, lexicon)
        if hits > best_hits:
            best, best_hits = topic, hits
    return best


def segments_of(topics: list[str]) -> list[dict[str, Any]]:
    segments: list[dict[str, Any]] = []
    for index, topic in enumerate(topics):
        if segments and segments[-1]["topic"] == topic:
            segments[-1]["end"] = index
            segments[-1]["messages"] += 1
        else:
            segments.append({"start": index, "end": index, "topic": topic, "messages": 1})
    return segments


def share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def traits_of(messages: list[Message]) -> dict[str, float]:
    all_words = [word for message in messages for word in message.words]
    positive = count_hits(all_words, POSITIVE_WORDS)
    negative = count_hits(all_words, NEGATIVE_WORDS)
    user_messages = [message for message in messages if message.role == "user"]
    imperative = sum(1 for message in user_messages if message.words and message.words[0] in IMPERATIVE_VERBS)
    traits = {
        "curiosity": share(sum(1 for message in messages if "?" in message.content), len(messages)),
        "verbosity": min(1.0, len(all_words) / len(messages) / VERBOSE_WORDS),
        "technicality": min(1.0, share(count_hits(all_words, TECHNICAL_WORDS), len(all_words)) * TECHNICALITY_SCALE),
        "positivity": 0.5 + 0.5 * share(positive - negative, positive + negative),
        "directness": share(imperative, len(user_messages)),
    }
    return {name: round(value, 3) for name, value in traits.items()}


def analyze(messages: list[Message]) -> dict[str, Any]:
    topics = [topic_of(message.words) for message in messages]
    return {
        "segments": segments_of(topics),
        "topics": list(dict.fromkeys(topics)),
        "traits": traits_of(messages),
        "messageCount": len(messages),
    }


def parse_messages(raw: list[Any]) -> list[Message]:
    """The checked messages; ApiError 422 naming the first field that is wrong."""
    if not raw:
        raise ApiError(422, "field 'messages' must not be empty", field="messages")
    if len(raw) > MAX_MESSAGES:
        raise ApiError(422, f"field 'messages' must hold at most {MAX_MESSAGES} messages", field="messages")
    messages = []
    for index, item in enumerate(raw):
        checked = check_fields(item, MESSAGE_FIELDS, prefix=f"messages[{index}].")
        messages.append(Message(checked["role"], checked["content"]))
    return messages


class Segmentation:
    """What the service has analysed so far."""

    def __init__(self) -> None:
        self.analyses = 0
        self.messages_analyzed = 0
        self.last_analysis_at: float | None = None

    def record(self, message_count: int) -> None:
        self.analyses += 1
        self.messages_analyzed += message_count
        self.last_analysis_at = time.time()


def create(service: Service) -> ASGIApp:
    segmentation = Segmentation()

    async def analyze_conversation(request: Request) -> Response:
        body = await read_json(request, {"messages": Field(list)}, limit=service.stack.max_body_bytes)
        messages = parse_messages(body["messages"])
        with service.tracer.span("segment"):
            result = await asyncio.to_thread(analyze, messages)
        segmentation.record(len(messages))
        return ok(result, request)

    async def status(request: Request) -> Response:
        return ok({"analyses": segmentation.analyses, "messagesAnalyzed": segmentation.messages_analyzed,
                   "lastAnalysisAt": segmentation.last_analysis_at}, request)

    return build_app(service, [
        Route("/api/v1/segmentation/analyze", analyze_conversation, methods=["POST"]),
        Route("/api/v1/segmentation/status", status),
    ])
