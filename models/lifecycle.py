"""Ticket states and the transitions allowed between them.

reported → routed → claimed → in_progress → resolved → closed, with side paths:
returned (mis-routed, back to dispatch), escalated (one level up), reopened
(resident not satisfied), and the honest end states closed_duplicate and
closed_not_fixed. Every change goes through ``check`` so no code path can
invent a transition."""
from __future__ import annotations

from enum import StrEnum

from models.messages.i18n import N_


class State(StrEnum):
    REPORTED = "reported"  # waiting for manual routing at the dispatch (duty) chat
    ROUTED = "routed"
    CLAIMED = "claimed"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    RETURNED = "returned"
    ESCALATED = "escalated"
    REOPENED = "reopened"
    CLOSED_DUPLICATE = "closed_duplicate"
    CLOSED_NOT_FIXED = "closed_not_fixed"


class Action(StrEnum):
    ROUTE = "route"
    CLAIM = "claim"
    PROGRESS = "progress"
    RESOLVE = "resolve"
    RETURN = "return"
    ESCALATE = "escalate"
    WHISTLE = "whistle"
    REOPEN = "reopen"
    CLOSE = "close"
    CLOSE_DUPLICATE = "close_duplicate"
    CLOSE_NOT_FIXED = "close_not_fixed"


S = State
WAITING = {S.ROUTED, S.ESCALATED}  # someone must claim it
WORKING = {S.CLAIMED, S.IN_PROGRESS, S.REOPENED}  # the assignee is on it
OPEN = {S.REPORTED, S.RETURNED} | WAITING | WORKING
FINAL = {S.CLOSED, S.CLOSED_DUPLICATE, S.CLOSED_NOT_FIXED}

TRANSITIONS: dict[Action, tuple[frozenset[State], State]] = {
    Action.ROUTE: (frozenset({S.REPORTED, S.RETURNED}), S.ROUTED),
    Action.CLAIM: (frozenset(WAITING), S.CLAIMED),
    Action.PROGRESS: (frozenset(WORKING), S.IN_PROGRESS),
    Action.RESOLVE: (frozenset(WORKING), S.RESOLVED),
    Action.RETURN: (frozenset({S.ROUTED, S.CLAIMED, S.IN_PROGRESS}), S.RETURNED),
    Action.ESCALATE: (frozenset(WAITING | WORKING), S.ESCALATED),
    Action.WHISTLE: (frozenset(WAITING | WORKING), S.ESCALATED),
    Action.REOPEN: (frozenset({S.RESOLVED, S.CLOSED}), S.REOPENED),
    Action.CLOSE: (frozenset({S.RESOLVED}), S.CLOSED),
    Action.CLOSE_DUPLICATE: (frozenset(OPEN), S.CLOSED_DUPLICATE),
    Action.CLOSE_NOT_FIXED: (frozenset(OPEN), S.CLOSED_NOT_FIXED),
}

STATE_LABELS = {
    S.REPORTED: N_("waiting to be routed"),
    S.ROUTED: N_("sent to the grid"),
    S.CLAIMED: N_("claimed"),
    S.IN_PROGRESS: N_("in progress"),
    S.RESOLVED: N_("resolved"),
    S.CLOSED: N_("closed"),
    S.RETURNED: N_("returned for re-routing"),
    S.ESCALATED: N_("escalated"),
    S.REOPENED: N_("reopened"),
    S.CLOSED_DUPLICATE: N_("closed as a duplicate"),
    S.CLOSED_NOT_FIXED: N_("closed, not fixed"),
}

LEVELS = ("grid", "community", "street", "department")


class TransitionError(Exception):
    """The ticket is not in a state that allows this action (a stale or double click)."""


def check(action: Action, state: str) -> State:
    """The state ``action`` leads to from ``state``, or TransitionError."""
    sources, target = TRANSITIONS[action]
    if State(state) not in sources:
        raise TransitionError(f"{action} not allowed in state {state}")
    return target


def sources(action: Action) -> list[str]:
    return [s.value for s in TRANSITIONS[action][0]]
