"""Routes of the catalog and reservations API (included under /api/)."""

from django.urls import path

from reservations import apis

app_name = "reservations"

urlpatterns = [
    path("concerts/", apis.ConcertListApi.as_view(), name="concert-list"),
    path(
        "concerts/<int:concert_id>/",
        apis.ConcertDetailApi.as_view(),
        name="concert-detail",
    ),
    path("performances/", apis.PerformanceListApi.as_view(), name="performance-list"),
    path(
        "performances/<int:performance_id>/",
        apis.PerformanceDetailApi.as_view(),
        name="performance-detail",
    ),
    path(
        "performances/<int:performance_id>/seats/",
        apis.PerformanceSeatListApi.as_view(),
        name="performance-seat-list",
    ),
    path("reservations/", apis.ReservationListApi.as_view(), name="reservation-list"),
    path(
        "reservations/create/",
        apis.ReservationCreateApi.as_view(),
        name="reservation-create",
    ),
    path(
        "reservations/<int:reservation_id>/",
        apis.ReservationDetailApi.as_view(),
        name="reservation-detail",
    ),
    path(
        "reservations/<int:reservation_id>/cancel/",
        apis.ReservationCancelApi.as_view(),
        name="reservation-cancel",
    ),
    path(
        "notifications/",
        apis.NotificationListApi.as_view(),
        name="notification-list",
    ),
]
