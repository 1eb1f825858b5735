"""page_size: absent is the default, 1 to 200 is used, anything else is a 400."""

from __future__ import annotations

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from http_api.pagination import PageSizePagination
from reservations.models import Concert
from tests.reservations.test_openapi_schema import ENDPOINTS, openapi_path

pytestmark = pytest.mark.django_db

CONCERTS_URL = reverse("reservations:concert-list")
DEFAULT = PageSizePagination.page_size
LIST_ENDPOINTS = [
    pattern
    for pattern, method in ENDPOINTS
    if method == "get"
    and getattr(pattern.callback.view_class, "pagination_class", None)
    is PageSizePagination
]


@pytest.fixture
def concerts() -> None:
    Concert.objects.bulk_create(
        Concert(title=f"Concert {i:03}") for i in range(DEFAULT + 1)
    )


def test_without_page_size_a_page_has_the_default_size(anon_client, concerts):
    response = anon_client.get(CONCERTS_URL)

    assert response.status_code == 200
    assert DEFAULT == 50
    assert len(response.json()["results"]) == DEFAULT


@pytest.mark.parametrize("size", ["1", "7", "200", "007"])
def test_a_page_size_from_1_to_200_is_used(anon_client, concerts, size):
    response = anon_client.get(CONCERTS_URL, {"page_size": size})

    assert response.status_code == 200
    assert len(response.json()["results"]) == min(int(size), DEFAULT + 1)


@pytest.mark.parametrize(
    "size", ["null", "", "0", "-1", "201", "abc", "1.5", " 5", "+5", "5_0", "\u0665"]
)
def test_any_other_page_size_is_a_400_validation_error(anon_client, concerts, size):
    response = anon_client.get(CONCERTS_URL, {"page_size": size})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert list(error["details"]) == ["page_size"]
    assert "1 to 200" in error["details"]["page_size"][0]


def test_a_bad_page_size_is_a_400_on_an_authenticated_list_too(api):
    response = api.get(reverse("reservations:notification-list"), {"page_size": 0})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_a_page_that_is_not_a_number_stays_drf_s_404(anon_client, concerts):
    response = anon_client.get(CONCERTS_URL, {"page": "abc"})

    assert response.status_code == 404


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_there_are_paginated_lists_to_check():
    assert len(LIST_ENDPOINTS) == 7


@pytest.mark.parametrize("pattern", LIST_ENDPOINTS, ids=openapi_path)
def test_every_list_publishes_the_page_size_bounds_and_its_400(schema, pattern):
    operation = schema["paths"][openapi_path(pattern)]["get"]
    [page_size] = [p for p in operation["parameters"] if p["name"] == "page_size"]

    assert page_size["in"] == "query"
    assert page_size["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 200,
        "default": DEFAULT,
    }
    assert "400" in operation["responses"]
