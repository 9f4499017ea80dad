"""An outgoing message's row payload (models/messages/outbox.py): built by hand for speed, it
must stay what ``dataclasses.asdict`` gives, and read back to the same message."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from models.messages.outbox import Button, KeyButton, NewerPayload, OutMessage

FULL = OutMessage(
    text="#20261123-0001 · 垃圾堆放", buttons=[[Button("认领", "claim", "17"), Button("Skip", "ph")]],
    keyboard=[[KeyButton("📍 Send location", "location")], [KeyButton("🙈 Stay anonymous")]],
    remove_keyboard=True, force_reply=True, placeholder="…", photos=[3, 4],
    location=(39.93, 116.40), pictures=["charts/a.png"], document="reports/x.xlsx",
    filename="report.xlsx", ref="card:17", edit=True)


def test_the_payload_is_what_asdict_gives():
    for message in (FULL, OutMessage(text="hello")):
        assert message.to_payload() == asdict(message)


def test_the_payload_reads_back_to_the_same_message_through_json():
    for message in (FULL, OutMessage(text="hello")):
        stored = json.loads(json.dumps(message.to_payload()))
        assert OutMessage.from_payload(stored) == message



def test_a_field_from_a_newer_version_is_refused_by_name():
    """In a rolling deploy a newer process may queue a field this one does not know, at
    the top or in a button: reading it says so (the sender leaves such a row to a newer
    process) rather than failing as a malformed row would, or quietly dropping it."""
    plain = OutMessage(text="hello", buttons=[[Button("Claim", "claim", "1")]]).to_payload()
    newer_top = {**plain, "sparkle": True}
    newer_button = {**plain, "buttons": [[{**plain["buttons"][0][0], "style": "danger"}]]}
    for stored, unknown in ((newer_top, {"sparkle"}), (newer_button, {"style"})):
        with pytest.raises(NewerPayload) as refused:
            OutMessage.from_payload(stored)
        assert refused.value.unknown == unknown
