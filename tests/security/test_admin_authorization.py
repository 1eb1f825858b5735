"""Who may do what to the pipeline in the admin: the authorization matrix as a table.

Five actors: anonymous, a user who is not staff, staff who may only view the pipeline
models (no requeue, no change), staff who may view and requeue dead letters, and a
superuser. The rows are every admin URL and every action of the pipeline's model
admins (events/admin.py), enumerated from `get_urls()` and the actions, so a new page
or action without a row fails `test_every_pipeline_admin_url_and_action_has_a_row`.

A cell says what the request gets and whether anything changed:

  LOGIN  a redirect to the admin login page; nothing changed
  SHOWN  200; nothing changed (a page, a dry run, or an action this user is not
         offered, which Django's changelist ignores)
  DENIED 403; nothing changed
  NOPE   405; nothing changed
  KEPT   302 back to the admin (not to the login); nothing changed (the changelist's
         "no action selected", or a save of a form whose fields are all read-only)
  DONE   200 or 302, and the rows changed (deleted, re-published, requeued, ...)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.db import transaction
from django.test import Client
from django.urls import reverse

from events.core.conf import pipeline_settings
from events.models import (
    DeadLetter,
    DeadLetterAction,
    FailedAttempt,
    InboxEntry,
    OutboxEvent,
    PublishedEvent,
)
from tests.events.dead_letter_helpers import make_dead_letter, ping_envelope

pytestmark = pytest.mark.django_db

LOGIN, SHOWN, DENIED, NOPE, KEPT, DONE = (
    "LOGIN",
    "SHOWN",
    "DENIED",
    "NOPE",
    "KEPT",
    "DONE",
)
ACTORS = ("anonymous", "user", "viewer", "requeuer", "superuser")
MODELS = {
    "outboxevent": OutboxEvent,
    "publishedevent": PublishedEvent,
    "inboxentry": InboxEntry,
    "failedattempt": FailedAttempt,
    "deadletter": DeadLetter,
}

# "<model> <url name or 'action <name>'> <method>"
# fmt: off
MATRIX: dict[str, tuple[str, str, str, str, str]] = {
    #                                          anon   user   viewer  requeuer super
    "outboxevent changelist GET":            (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "outboxevent change GET":                (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "outboxevent change POST":               (LOGIN, LOGIN, DENIED, DENIED, KEPT),
    "outboxevent history GET":               (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "outboxevent add GET":                   (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "outboxevent add POST":                  (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "outboxevent delete GET":                (LOGIN, LOGIN, DENIED, DENIED, SHOWN),
    "outboxevent delete POST":               (LOGIN, LOGIN, DENIED, DENIED, DONE),
    "outboxevent action republish":          (LOGIN, LOGIN, SHOWN,  SHOWN,  DONE),
    "outboxevent action delete_selected":    (LOGIN, LOGIN, SHOWN,  SHOWN,  DONE),

    "publishedevent changelist GET":         (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "publishedevent change GET":             (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "publishedevent change POST":            (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "publishedevent history GET":            (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "publishedevent add GET":                (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "publishedevent add POST":               (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "publishedevent delete GET":             (LOGIN, LOGIN, DENIED, DENIED, SHOWN),
    "publishedevent delete POST":            (LOGIN, LOGIN, DENIED, DENIED, DONE),
    "publishedevent action delete_selected": (LOGIN, LOGIN, SHOWN,  SHOWN,  DONE),

    "inboxentry changelist GET":             (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "inboxentry change GET":                 (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "inboxentry change POST":                (LOGIN, LOGIN, DENIED, DENIED, KEPT),
    "inboxentry history GET":                (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "inboxentry add GET":                    (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "inboxentry add POST":                   (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "inboxentry delete GET":                 (LOGIN, LOGIN, DENIED, DENIED, SHOWN),
    "inboxentry delete POST":                (LOGIN, LOGIN, DENIED, DENIED, DONE),
    "inboxentry action delete_selected":     (LOGIN, LOGIN, SHOWN,  SHOWN,  DONE),

    "failedattempt changelist GET":          (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "failedattempt change GET":              (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "failedattempt change POST":             (LOGIN, LOGIN, DENIED, DENIED, KEPT),
    "failedattempt history GET":             (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "failedattempt add GET":                 (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "failedattempt add POST":                (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "failedattempt delete GET":              (LOGIN, LOGIN, DENIED, DENIED, SHOWN),
    "failedattempt delete POST":             (LOGIN, LOGIN, DENIED, DENIED, DONE),
    "failedattempt action delete_selected":  (LOGIN, LOGIN, SHOWN,  SHOWN,  DONE),

    "deadletter changelist GET":             (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "deadletter change GET":                 (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "deadletter change POST":                (LOGIN, LOGIN, NOPE,   NOPE,   NOPE),
    "deadletter history GET":                (LOGIN, LOGIN, SHOWN,  SHOWN,  SHOWN),
    "deadletter add GET":                    (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "deadletter add POST":                   (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "deadletter delete GET":                 (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "deadletter delete POST":                (LOGIN, LOGIN, DENIED, DENIED, DENIED),
    "deadletter action delete_selected":     (LOGIN, LOGIN, SHOWN,  KEPT,   KEPT),
    "deadletter action requeue_selected":    (LOGIN, LOGIN, DENIED, DONE,   DONE),
    "deadletter action requeue_selected_dry_run":
                                             (LOGIN, LOGIN, DENIED, SHOWN,  SHOWN),
    "deadletter action resolve_selected":    (LOGIN, LOGIN, DENIED, DENIED, DONE),
    "deadletter action discard_selected":    (LOGIN, LOGIN, DENIED, DENIED, DONE),
    "deadletter requeue_one GET":            (LOGIN, LOGIN, DENIED, SHOWN,  SHOWN),
    "deadletter requeue_one POST":           (LOGIN, LOGIN, DENIED, DONE,   DONE),
    "deadletter requeue_matching GET":       (LOGIN, LOGIN, DENIED, SHOWN,  SHOWN),
    "deadletter requeue_matching POST":      (LOGIN, LOGIN, DENIED, DONE,   DONE),
    "deadletter resolve_one GET":            (LOGIN, LOGIN, NOPE,   NOPE,   NOPE),
    "deadletter resolve_one POST":           (LOGIN, LOGIN, DENIED, DENIED, DONE),
    "deadletter discard_one GET":            (LOGIN, LOGIN, NOPE,   NOPE,   NOPE),
    "deadletter discard_one POST":           (LOGIN, LOGIN, DENIED, DENIED, DONE),
}
# fmt: on

# What each kind of row is POSTed (GETs send nothing).
POST_DATA = {
    "change": {},
    "add": {},
    "delete": {"post": "yes"},
    "requeue_one": {"payload": ""},
    "requeue_matching": {"confirm": "yes"},
    "resolve_one": {},
    "discard_one": {},
}
# Pages that take no object id.
WITHOUT_ID = {"changelist", "add", "requeue_matching"}
# Rows that send to Kafka when allowed: they get topics of their own.
SENDS = {"requeue_one POST", "requeue_matching POST", "action requeue_selected"}

CASES = [
    pytest.param(row, actor, cells[i], id=f"{actor}-{row}")
    for row, cells in MATRIX.items()
    for i, actor in enumerate(ACTORS)
]


def admin_rows() -> set[str]:
    """'<model> <url name>' and '<model> action <name>' for every pipeline admin."""
    rows = set()
    for name, model in MODELS.items():
        model_admin = admin.site._registry[model]
        for pattern in model_admin.get_urls():
            if pattern.name:
                rows.add(f"{name} {pattern.name.removeprefix(f'events_{name}_')}")
        # Every action the admin may offer, before filtering by permission.
        for _func, action, _description in model_admin._get_base_actions():
            rows.add(f"{name} action {action}")
    return rows


def make_staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="events", codename__in=codenames
        )
    )
    return user


VIEW = [f"view_{name}" for name in MODELS]


@pytest.fixture(scope="module")
def actors(django_db_setup, django_db_blocker) -> Iterator[dict[str, User | None]]:
    """The users, committed once for the module; each case's rows roll back."""
    with django_db_blocker.unblock(), transaction.atomic():
        users = {
            "user": User.objects.create_user("not-staff", password="pw"),
            "viewer": make_staff("viewer-only", *VIEW),
            "requeuer": make_staff("requeuer", *VIEW, "requeue_deadletter"),
            "superuser": User.objects.create_superuser("root", password="pw"),
        }
    try:
        yield {"anonymous": None, **users}
    finally:
        with django_db_blocker.unblock():
            User.objects.filter(pk__in=[u.pk for u in users.values()]).delete()


def make_rows() -> dict[str, object]:
    """One row of each pipeline model; the outbox row is parked (re-publishable)."""
    now = datetime.now(tz=UTC)
    event_id = uuid.uuid4()
    common = {"topic": "t", "partition": 0, "offset": 1}
    return {
        "outboxevent": OutboxEvent.objects.create(
            event_id=event_id,
            event_type="TestPinged",
            schema_version=1,
            topic="t",
            key="k",
            payload={"ping_id": "p"},
            aggregate_type="test",
            aggregate_id="p",
            parked_at=now,
            last_error="too large",
        ),
        "publishedevent": PublishedEvent.objects.create(
            outbox_id=1,
            event_id=uuid.uuid4(),
            event_type="TestPinged",
            key="k",
            aggregate_type="test",
            aggregate_id="p",
            created_at=now,
            sent_at=now,
            **common,
        ),
        "inboxentry": InboxEntry.objects.create(
            event_id=event_id, handler="h", **common
        ),
        "failedattempt": FailedAttempt.objects.create(
            event_id=event_id,
            handler="h",
            attempt=1,
            exception_class="builtins.RuntimeError",
            message="boom",
            outcome=FailedAttempt.Outcome.choices[0][0],
            **common,
        ),
        "deadletter": make_dead_letter(pipeline_settings(), ping_envelope("matrix")),
    }


def pipeline_state() -> list:
    """Every row of every pipeline table (and the dead-letter audit trail)."""
    return [
        list(model.objects.order_by("pk").values_list())
        for model in (*MODELS.values(), DeadLetterAction)
    ]


def url_of(model: str, page: str, rows: dict) -> str:
    args = [] if page in WITHOUT_ID else [rows[model].pk]
    return reverse(f"admin:events_{model}_{page}", args=args)


def test_every_pipeline_admin_url_and_action_has_a_row() -> None:
    rows = {key.rsplit(" ", 1)[0] if " action " not in key else key for key in MATRIX}
    assert admin_rows() - rows == set(), "admin pages or actions without a row"
    assert rows - admin_rows() == set(), "rows for pages or actions that do not exist"


@pytest.mark.parametrize(("row", "actor", "expected"), CASES)
def test_admin_authorization_matrix(request, actors, row, actor, expected) -> None:
    model, rest = row.split(" ", 1)
    if expected == DONE and rest in SENDS:
        request.getfixturevalue("fresh_topics")  # the requeue needs real topics
    rows = make_rows()
    client = Client()
    if actors[actor] is not None:
        client.force_login(actors[actor])
    if rest.startswith("action "):
        url = url_of(model, "changelist", rows)
        data = {
            "action": rest.removeprefix("action "),
            "_selected_action": [rows[model].pk],
        }
        if data["action"] == "delete_selected":
            data["post"] = "yes"  # confirmed, not just the confirmation page
        method = "POST"
    else:
        page, method = rest.rsplit(" ", 1)
        url = url_of(model, page, rows)
        data = POST_DATA[page] if method == "POST" else {}
    before = pipeline_state()

    response = getattr(client, method.lower())(url, data)

    status = response.status_code
    changed = pipeline_state() != before
    if expected == LOGIN:
        assert status == 302 and response["Location"].startswith("/admin/login/")
    elif expected == KEPT:
        assert status == 302 and not response["Location"].startswith("/admin/login/")
    elif expected == DONE:
        assert status in (200, 302), response.content[:300]
        if status == 302:
            assert not response["Location"].startswith("/admin/login/")
    else:
        assert status == {SHOWN: 200, DENIED: 403, NOPE: 405}[expected]
    assert changed == (expected == DONE), "rows changed" if changed else "no change"
    if expected == DONE and "requeue" in rest:
        letter = DeadLetter.objects.get(pk=rows["deadletter"].pk)
        assert letter.status == DeadLetter.Status.REQUEUED
        assert letter.actions.get().user == actors[actor]
