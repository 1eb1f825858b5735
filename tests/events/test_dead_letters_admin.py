"""The dead-letter admin and CLI: browsing, requeueing, and who may do what."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from unittest import mock

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse

from events.core import headers as dl
from events.dead_letters import requeue
from events.models import DeadLetter, DeadLetterAction, InboxEntry
from tests.events.dead_letter_helpers import make_dead_letter, ping_envelope, read_all
from tests.kafka_helpers import header

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:events_deadletter_changelist"


def staff(django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="events", codename__in=codenames
        )
    )
    return user


@pytest.fixture
def requeuer(django_user_model):
    return staff(django_user_model, "requeuer", "view_deadletter", "requeue_deadletter")


@pytest.fixture
def viewer(django_user_model):
    """May look and resolve, may not requeue."""
    return staff(django_user_model, "viewer", "view_deadletter", "change_deadletter")


def test_staff_with_requeue_permission_requeues_selected_from_the_admin(
    client, requeuer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("admin"))
    other = make_dead_letter(fresh_topics, ping_envelope("left-alone"))
    client.force_login(requeuer)
    response = client.post(
        reverse(CHANGELIST),
        {"action": "requeue_selected", "_selected_action": [letter.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 sent" in response.content.decode()
    [message] = read_all(fresh_topics.topic("reservation"), expected=1)
    assert header(message, "x-requeued-from") == str(letter.pk)
    letter.refresh_from_db()
    other.refresh_from_db()
    assert (letter.status, other.status) == ("requeued", "new")
    [action] = letter.actions.all()
    assert (action.actor, action.user, action.requeue_offset) == (
        "requeuer",
        requeuer,
        message.offset(),
    )


def test_changelist_shows_counts_by_topic_and_status_and_filters(
    client, requeuer, fresh_topics
) -> None:
    make_dead_letter(fresh_topics, ping_envelope("one"))
    make_dead_letter(fresh_topics, ping_envelope("two"), status="resolved")
    client.force_login(requeuer)
    page = client.get(reverse(CHANGELIST), {"status": "resolved"}).content.decode()
    topic = fresh_topics.topic("reservation")
    # new, requeued, resolved, discarded, all
    assert f"<td>{topic}</td><td>1</td><td>0</td><td>1</td><td>0</td><td>2</td>" in page
    assert "1 dead letter" in page and "Requeue all matching" in page
    found = make_dead_letter(fresh_topics, ping_envelope("searched"), key="seat-42")
    for term in (str(found.event_id), "seat-42"):
        page = client.get(reverse(CHANGELIST), {"q": term}).content.decode()
        assert "1 dead letter" in page and "?_changelist_filters" in page
    DeadLetter.objects.filter(pk=found.pk).update(error_message="disk on fire")
    page = client.get(reverse(CHANGELIST), {"q": "on fire"}).content.decode()
    assert "1 dead letter" in page


def test_detail_page_shows_payload_traceback_and_timeline(
    client, requeuer, fresh_topics
) -> None:
    envelope = ping_envelope("detail")
    letter = make_dead_letter(fresh_topics, envelope)
    InboxEntry.objects.create(
        event_id=envelope["id"],
        handler="h",
        topic=letter.original_topic,
        partition=0,
        offset=7,
    )
    client.force_login(requeuer)
    page = client.get(
        reverse("admin:events_deadletter_change", args=[letter.pk])
    ).content.decode()
    assert "&quot;ping_id&quot;: &quot;detail&quot;" in page  # pretty-printed JSON
    assert "RuntimeError: boom" in page
    assert "x-replay-count" not in page and "kafka_dlt-exception-fqcn:" in page
    assert f"dead letter {letter.pk} (this one)" in page
    assert "handled" in page and f"{letter.original_topic}[0]@7" in page


def test_the_detail_page_shows_springs_binary_numbers_and_old_ascii_ones_as_numbers(
    client, requeuer, fresh_topics
) -> None:
    new = make_dead_letter(
        fresh_topics,
        ping_envelope("binary"),
        extra_headers=[
            (dl.DLT_ORIGINAL_PARTITION, dl.encode_int32(2)),
            (dl.DLT_ORIGINAL_OFFSET, dl.encode_int64(41)),
            (dl.DLT_ORIGINAL_TIMESTAMP, dl.encode_int64(1_700_000_000_123)),
        ],
    )
    old = make_dead_letter(
        fresh_topics,
        ping_envelope("ascii"),
        extra_headers=[
            (dl.DLT_ORIGINAL_PARTITION, b"2"),
            (dl.DLT_ORIGINAL_OFFSET, b"41"),
            (dl.DLT_ORIGINAL_TIMESTAMP, b"1700000000123"),
        ],
    )
    client.force_login(requeuer)
    for letter in (new, old):
        page = client.get(
            reverse("admin:events_deadletter_change", args=[letter.pk])
        ).content.decode()
        for name, shown in [
            (dl.DLT_ORIGINAL_PARTITION, "2"),
            (dl.DLT_ORIGINAL_OFFSET, "41"),
            (dl.DLT_ORIGINAL_TIMESTAMP, "1700000000123"),
        ]:
            assert re.search(rf"\n{name}: {shown}(\n|</pre>)", page), name


def test_requeue_everything_matching_confirms_the_count_then_sends(
    client, requeuer, fresh_topics
) -> None:
    letters = [make_dead_letter(fresh_topics, ping_envelope(f"m{i}")) for i in range(3)]
    make_dead_letter(fresh_topics, ping_envelope("done"), status="resolved")
    client.force_login(requeuer)
    url = reverse("admin:events_deadletter_requeue_matching") + "?status__exact=new"
    confirm = client.get(url)
    assert confirm.status_code == 200
    assert '<strong id="requeue-count">3</strong>' in confirm.content.decode()
    assert read_all(fresh_topics.topic("reservation")) == [], "GET sent something"
    dry = client.post(url, {"dry_run": "1"})
    assert "Dry run: nothing was sent." in dry.content.decode()
    assert "x-requeued-from" in dry.content.decode()
    assert read_all(fresh_topics.topic("reservation")) == []
    client.post(url, {"confirm": "yes"})
    arrived = read_all(fresh_topics.topic("reservation"), expected=3)
    assert sorted(header(m, "x-requeued-from") for m in arrived) == sorted(
        str(x.pk) for x in letters
    )
    assert set(
        DeadLetter.objects.filter(pk__in=[x.pk for x in letters]).values_list(
            "status", flat=True
        )
    ) == {"requeued"}


def test_edited_payload_is_sent_and_audited_while_the_original_is_kept(
    client, requeuer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("edit", mode="fail"))
    client.force_login(requeuer)
    url = reverse("admin:events_deadletter_requeue_one", args=[letter.pk])
    assert "&quot;mode&quot;: &quot;fail&quot;" in client.get(url).content.decode()
    edited = letter.payload | {"data": {"ping_id": "edit", "mode": "ok"}}
    client.post(url, {"payload": json.dumps(edited)})
    [message] = read_all(fresh_topics.topic("reservation"), expected=1)
    assert json.loads(message.value())["data"]["mode"] == "ok"
    letter.refresh_from_db()
    assert letter.payload["data"]["mode"] == "fail"
    assert [a.action for a in letter.actions.all()] == ["payload_edited", "requeued"]
    assert letter.actions.first().payload == edited


def test_requeue_matching_with_a_malformed_filter_is_a_400_that_sends_nothing(
    client, requeuer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("kept"))
    client.force_login(requeuer)
    url = (
        reverse("admin:events_deadletter_requeue_matching")
        + "?last_failed_at__gte=not-a-date"
    )
    for response in (client.get(url), client.post(url, {"confirm": "yes"})):
        assert response.status_code == 400
        assert "filter is not valid" in response.content.decode()
    letter.refresh_from_db()
    assert letter.status == "new"
    assert read_all(fresh_topics.topic("reservation")) == []


def test_staff_without_requeue_permission_gets_403_on_every_requeue_path(
    client, viewer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("forbidden"))
    client.force_login(viewer)
    assert client.get(reverse(CHANGELIST)).status_code == 200
    one = reverse("admin:events_deadletter_requeue_one", args=[letter.pk])
    matching = reverse("admin:events_deadletter_requeue_matching")
    responses = [
        client.post(
            reverse(CHANGELIST),
            {"action": action, "_selected_action": [letter.pk]},
        )
        for action in ("requeue_selected", "requeue_selected_dry_run")
    ]
    responses += [
        client.get(one),
        client.post(one, {"payload": ""}),
        client.get(matching),
        client.post(matching, {"confirm": "yes"}),
    ]
    assert [r.status_code for r in responses] == [403] * 6
    assert read_all(fresh_topics.topic("reservation")) == []
    letter.refresh_from_db()
    assert letter.status == "new" and not letter.actions.exists()
    # Resolving needs the change permission, which this user has.
    client.post(
        reverse(CHANGELIST),
        {"action": "resolve_selected", "_selected_action": [letter.pk]},
    )
    letter.refresh_from_db()
    assert letter.status == "resolved"


def test_resolve_and_discard_need_the_change_permission(
    client, requeuer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("no-change"))
    client.force_login(requeuer)
    for action in ("resolve_selected", "discard_selected"):
        response = client.post(
            reverse(CHANGELIST), {"action": action, "_selected_action": [letter.pk]}
        )
        assert response.status_code == 403
    letter.refresh_from_db()
    assert letter.status == "new"


def test_cli_dry_run_prints_and_sends_nothing(fresh_topics) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("cli-dry"))
    out = io.StringIO()
    call_command("requeue_dead_letters", "--dry-run", stdout=out)
    text = out.getvalue()
    assert f"dead letter {letter.pk}: would_send" in text
    assert "dry run: 1 matched, 0 sent" in text
    assert read_all(fresh_topics.topic("reservation")) == []
    letter.refresh_from_db()
    assert letter.status == "new" and not letter.actions.exists()


def test_cli_requeues_by_filter_as_the_cli_actor(fresh_topics) -> None:
    wanted = make_dead_letter(fresh_topics, ping_envelope("cli"))
    make_dead_letter(fresh_topics, ping_envelope("cli-other"), status="discarded")
    other_error = make_dead_letter(fresh_topics, ping_envelope("cli-other-error"))
    DeadLetter.objects.filter(pk=other_error.pk).update(error_class="x.OtherError")
    out = io.StringIO()
    call_command(
        "requeue_dead_letters",
        "--topic",
        "reservation",
        "--error-class",
        "RuntimeError",
        "--since",
        "2026-01-01T00:00:00",
        stdout=out,
    )
    assert "1 matched, 1 sent" in out.getvalue()
    [message] = read_all(fresh_topics.topic("reservation"), expected=1)
    assert header(message, "x-requeued-from") == str(wanted.pk)
    action = DeadLetterAction.objects.get(dead_letter=wanted)
    assert (action.actor, action.user) == ("cli", None)


def test_cli_fails_loudly_when_the_broker_is_unreachable(
    fresh_topics, settings
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("cli-down"))
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"
    out = io.StringIO()
    real = requeue.build_producer
    with (
        mock.patch.object(
            requeue,
            "build_producer",
            lambda **kw: real(**{**kw, "delivery.timeout.ms": 1500}),
        ),
        pytest.raises(CommandError, match="could not be requeued"),
    ):
        call_command("requeue_dead_letters", "--ids", str(letter.pk), stdout=out)
    assert f"dead letter {letter.pk}: failed" in out.getvalue()
    letter.refresh_from_db()
    assert letter.status == "new"


# -- the detail page's buttons, the list's columns, the requeue form ----------------


@pytest.fixture
def operator(django_user_model):
    """May do everything: look, requeue, resolve and discard."""
    return staff(
        django_user_model,
        "operator",
        "view_deadletter",
        "change_deadletter",
        "requeue_deadletter",
    )


def detail(client, letter: DeadLetter) -> str:
    response = client.get(reverse("admin:events_deadletter_change", args=[letter.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_detail_page_has_requeue_resolve_discard_buttons_above_the_fields(
    client, operator, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("buttons"), key="seat-7")
    client.force_login(operator)
    page = detail(client, letter)
    first_fieldset = page.index("<fieldset")
    for url_name, label in (
        ("requeue_one", "Requeue"),
        ("resolve_one", "Resolve"),
        ("discard_one", "Discard"),
    ):
        url = reverse(f"admin:events_deadletter_{url_name}", args=[letter.pk])
        form = page.index(f'<form method="post" action="{url}">')
        assert form < first_fieldset, f"{label} is not above the fields"
        assert page.index(f">{label}</button>", form) < first_fieldset
    # The buttons are forms of their own, not nested in the change form.
    assert page.index("</div>", page.index('id="dead-letter-actions"')) < page.index(
        'id="deadletter_form"'
    )
    assert f"<h1>Dead letter {letter.pk}: {letter.original_topic} / seat-7</h1>" in page
    assert "RuntimeError: boom" in page[:first_fieldset]


def test_read_only_detail_page_has_no_save_buttons_or_change_wording(
    client, operator, viewer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("read-only"))
    for user in (operator, viewer):
        client.force_login(user)
        page = detail(client, letter)
        assert 'name="_save"' not in page and 'name="_continue"' not in page
        assert ">Save" not in page and 'value="Save' not in page
        assert "Change dead letter" not in page
        assert "Dead letter" in page.split("<title>")[1].split("</title>")[0]
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "to change" not in page and "<h1>Dead letters</h1>" in page


def test_posting_the_read_only_detail_form_changes_nothing(
    client, operator, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("no-post"))
    client.force_login(operator)
    url = reverse("admin:events_deadletter_change", args=[letter.pk])
    response = client.post(url, {"status": "resolved", "_save": "Save"})
    assert response.status_code == 405
    letter.refresh_from_db()
    assert letter.status == "new" and not letter.actions.exists()


def test_changelist_shows_status_topic_key_error_message_counts_and_seconds(
    client, operator, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("columns"), key="seat-99")
    long_message = "reservation 48213 has no seat " + "x" * 200
    failed_at = datetime(2026, 11, 25, 12, 34, 56, 789000, tzinfo=UTC)
    DeadLetter.objects.filter(pk=letter.pk).update(
        error_class="events.core.types.PoisonMessage",
        error_message=long_message,
        attempts=4,
        replay_count=2,
        last_failed_at=failed_at,
    )
    client.force_login(operator)
    page = client.get(reverse(CHANGELIST)).content.decode()
    headers = re.findall(
        r'<div class="text">(?:<a href="[^"]*">|<span>)([^<]*)</(?:a|span)></div>', page
    )
    assert headers == [
        "ID",
        "Status",
        "Topic / event",
        "Key",
        "Error",
        "Attempts",
        "Replays",
        "Last failure",
    ]
    cell = re.search(r'<td class="field-error_summary">(.*?)</td>', page).group(1)
    shown = re.search(r">(.*)</span>", cell).group(1)
    assert shown.startswith("PoisonMessage: reservation 48213 has no seat xxx")
    assert (
        "events.core.types" not in shown and len(shown) <= len("PoisonMessage: ") + 80
    )
    assert f'title="events.core.types.PoisonMessage: {long_message}"' in cell
    assert '<td class="field-attempts">4</td>' in page
    assert '<td class="field-replays">2</td>' in page
    assert ">2026-11-25 12:34:56</time>" in page
    assert f">{letter.original_topic}<br>" in page
    assert '<span class="dl-status dl-status-new">new</span>' in page
    assert '<span title="seat-99">seat-99</span>' in page
    # Detail times carry seconds (and milliseconds) too.
    assert "2026-11-25 12:34:56.789 UTC" in detail(client, letter)


@pytest.mark.parametrize(
    ("button", "status", "kind"),
    [
        ("resolve_one", "resolved", "resolved"),
        ("discard_one", "discarded", "discarded"),
    ],
)
def test_detail_buttons_resolve_and_discard_and_record_who_did_it(
    client, operator, fresh_topics, button, status, kind
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope(button))
    other = make_dead_letter(fresh_topics, ping_envelope("untouched"))
    client.force_login(operator)
    url = reverse(f"admin:events_deadletter_{button}", args=[letter.pk])
    assert client.get(url).status_code == 405
    response = client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == reverse(
        "admin:events_deadletter_change", args=[letter.pk]
    )
    assert f"Dead letter {letter.pk} {status}." in response.content.decode()
    letter.refresh_from_db()
    other.refresh_from_db()
    assert (letter.status, other.status) == (status, "new")
    [action] = letter.actions.all()
    assert (action.action, action.actor, action.user, action.from_status) == (
        kind,
        "operator",
        operator,
        "new",
    )
    page = detail(client, letter)
    # Its own button is gone once done; the other status change is still offered.
    assert f'action="{url}"' not in page
    assert ">Requeue</button>" not in page, "resolved/discarded cannot be requeued"
    again = client.post(url, follow=True).content.decode()
    assert "nothing changed" in again and letter.actions.count() == 1


def test_user_without_requeue_permission_gets_no_requeue_button_and_a_403(
    client, viewer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("no-button"))
    client.force_login(viewer)
    page = detail(client, letter)
    requeue_url = reverse("admin:events_deadletter_requeue_one", args=[letter.pk])
    assert requeue_url not in page and ">Requeue</button>" not in page
    assert ">Resolve</button>" in page and ">Discard</button>" in page
    assert client.post(requeue_url, {"payload": ""}).status_code == 403
    assert read_all(fresh_topics.topic("reservation")) == []
    letter.refresh_from_db()
    assert letter.status == "new" and not letter.actions.exists()


def test_user_without_change_permission_gets_no_status_buttons_and_a_403(
    client, requeuer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("no-change-button"))
    client.force_login(requeuer)
    page = detail(client, letter)
    assert ">Requeue</button>" in page
    assert ">Resolve</button>" not in page and ">Discard</button>" not in page
    for button in ("resolve_one", "discard_one"):
        url = reverse(f"admin:events_deadletter_{button}", args=[letter.pk])
        assert client.post(url).status_code == 403
    letter.refresh_from_db()
    assert letter.status == "new" and not letter.actions.exists()


def test_top_requeue_button_sends_the_original_bytes(
    client, operator, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("top-button"))
    client.force_login(operator)
    url = reverse("admin:events_deadletter_requeue_one", args=[letter.pk])
    page = detail(client, letter)
    form = page[page.index(f'action="{url}"') : page.index("</form>", page.index(url))]
    fields = dict(
        re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form)
    )
    assert fields.pop("csrfmiddlewaretoken") and fields == {"payload": ""}
    response = client.post(url, fields, follow=True)
    assert "Requeue: 1 sent." in response.content.decode()
    [message] = read_all(fresh_topics.topic("reservation"), expected=1)
    assert message.value() == bytes(letter.value)
    assert [a.action for a in letter.actions.all()] == ["requeued"]


def test_requeue_form_names_the_letter_and_says_what_an_empty_box_sends(
    client, requeuer, fresh_topics
) -> None:
    letter = make_dead_letter(fresh_topics, ping_envelope("form"), key="seat-3")
    undecodable = make_dead_letter(fresh_topics, ping_envelope("raw"), key="")
    DeadLetter.objects.filter(pk=undecodable.pk).update(
        value=b"\x00\x01not json",
        payload=None,
        event_id=None,
        event_type="",
    )
    client.force_login(requeuer)

    def form(row: DeadLetter) -> str:
        url = reverse("admin:events_deadletter_requeue_one", args=[row.pk])
        return client.get(url).content.decode()

    page = form(letter)
    topic = letter.original_topic
    assert f"<h1>Requeue dead letter {letter.pk}: {topic} / seat-3</h1>" in page
    size = len(bytes(letter.value))
    assert f"Leave it empty, or as shown, to send the original {size} bytes" in page
    page = form(undecodable)
    assert f"<h1>Requeue dead letter {undecodable.pk}: {topic} / (no key)</h1>" in page
    content = page.split('<div id="content"')[1]
    assert "None" not in content and "( " not in content and "()" not in content
    assert "Leave the box empty to send the original 10 bytes unchanged" in page
