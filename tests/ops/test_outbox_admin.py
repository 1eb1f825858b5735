"""The outbox's admin pages."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.urls import reverse

import events
from tests.effects.event_types import TestPinged

pytestmark = pytest.mark.django_db


def test_an_outbox_row_shows_its_payload_as_pretty_json(admin_client) -> None:
    with transaction.atomic():
        row = events.publish(TestPinged(ping_id="shown"))
    page = admin_client.get(
        reverse("admin:events_outboxevent_change", args=[row.pk])
    ).content.decode()
    assert "&quot;ping_id&quot;: &quot;shown&quot;" in page  # JSON, indented
    assert "&#x27;ping_id&#x27;" not in page  # not a Python dict's repr
