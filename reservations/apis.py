"""Thin DRF views: validate input, call one service or selector, serialize the result.

The catalog (concerts, performances, available seats) is public; everything else is
the caller's own. Writes are throttled under "writes" and honour Idempotency-Key.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from http_api.api_schema import (
    AUTH_ERRORS,
    IDEMPOTENCY_KEY_PARAMETER,
    WRITE_ERRORS,
    error_responses,
)
from http_api.authenticated import AuthenticatedRequest
from http_api.idempotency import idempotent
from http_api.pagination import PageSizePagination
from http_api.throttling import WritesThrottleMixin
from reservations import selectors
from reservations.models import (
    Concert,
    Notification,
    Performance,
    Reservation,
    Seat,
    SeatGrade,
)
from reservations.services import reservation_cancel, reservation_create


class ConcertSerializer(serializers.ModelSerializer):
    class Meta:
        model = Concert
        fields = ["id", "title", "artist", "description"]
        ref_name = "Concert"


class PerformanceSerializer(serializers.ModelSerializer):
    concert = ConcertSerializer(read_only=True)

    class Meta:
        model = Performance
        fields = ["id", "concert", "starts_at", "venue"]
        ref_name = "Performance"


class ReservationSerializer(serializers.ModelSerializer):
    class SeatSerializer(serializers.ModelSerializer):
        class Meta:
            model = Seat
            fields = ["id", "number", "grade", "performance_id"]
            ref_name = "ReservationSeat"

    seat = SeatSerializer(read_only=True)
    ticket_code = serializers.CharField(
        source="ticket.code", read_only=True, allow_null=True
    )

    class Meta:
        model = Reservation
        fields = [
            "id",
            "status",
            "seat",
            "price",
            "hold_expires_at",
            "paid_at",
            "confirmed_at",
            "cancelled_at",
            "expired_at",
            "ticket_code",
            "created_at",
        ]
        ref_name = "Reservation"


class ConcertListApi(ListAPIView):
    pagination_class = PageSizePagination
    permission_classes = [AllowAny]
    serializer_class = ConcertSerializer

    @extend_schema(
        operation_id="concert_list",
        tags=["catalog"],
        responses={200: ConcertSerializer(many=True), **error_responses(400, 404)},
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self) -> QuerySet[Concert]:
        return selectors.concert_list()


class ConcertDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="concert_retrieve",
        tags=["catalog"],
        responses={200: ConcertSerializer, **error_responses(404)},
    )
    def get(self, request: Request, concert_id: int) -> Response:
        concert = selectors.concert_get(concert_id=concert_id)
        return Response(ConcertSerializer(concert).data)


class PerformanceListApi(ListAPIView):
    pagination_class = PageSizePagination
    permission_classes = [AllowAny]
    serializer_class = PerformanceSerializer

    class FilterSerializer(serializers.Serializer):
        concert = serializers.IntegerField(min_value=1, required=False)

    @extend_schema(
        operation_id="performance_list",
        tags=["catalog"],
        parameters=[FilterSerializer],
        responses={200: PerformanceSerializer(many=True), **error_responses(400, 404)},
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self) -> QuerySet[Performance]:
        filters = self.FilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.performance_list(
            concert_id=filters.validated_data.get("concert")
        )


class PerformanceDetailApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="performance_retrieve",
        tags=["catalog"],
        responses={200: PerformanceSerializer, **error_responses(404)},
    )
    def get(self, request: Request, performance_id: int) -> Response:
        performance = selectors.performance_get(performance_id=performance_id)
        return Response(PerformanceSerializer(performance).data)


class PerformanceSeatListApi(ListAPIView):
    """The performance's AVAILABLE seats, by grade and price range."""

    pagination_class = PageSizePagination
    permission_classes = [AllowAny]

    class FilterSerializer(serializers.Serializer):
        grade = serializers.ChoiceField(choices=SeatGrade.choices, required=False)
        min_price = serializers.IntegerField(min_value=0, required=False)
        max_price = serializers.IntegerField(min_value=0, required=False)

        def validate(self, attrs: dict) -> dict:
            low, high = attrs.get("min_price"), attrs.get("max_price")
            if low is not None and high is not None and low > high:
                raise serializers.ValidationError(
                    {"max_price": ["Must be greater than or equal to min_price."]}
                )
            return attrs

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Seat
            fields = ["id", "number", "grade", "price", "status"]
            ref_name = "Seat"

    serializer_class = OutputSerializer

    @extend_schema(
        operation_id="performance_seat_list",
        tags=["catalog"],
        parameters=[FilterSerializer],
        responses={200: OutputSerializer(many=True), **error_responses(400, 404)},
    )
    def get(self, request: Request, performance_id: int) -> Response:
        return super().get(request, performance_id)

    def get_queryset(self) -> QuerySet[Seat]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Seat.objects.none()
        filters = self.FilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.seat_list_available(
            performance_id=self.kwargs["performance_id"], **filters.validated_data
        )


class ReservationListApi(ListAPIView):
    request: AuthenticatedRequest
    pagination_class = PageSizePagination
    serializer_class = ReservationSerializer

    @extend_schema(
        operation_id="reservation_list",
        tags=["reservations"],
        responses={
            200: ReservationSerializer(many=True),
            **error_responses(400, *AUTH_ERRORS, 404),
        },
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self) -> QuerySet[Reservation]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Reservation.objects.none()
        return selectors.reservation_list(user=self.request.user)


class ReservationCreateApi(WritesThrottleMixin, APIView):
    class InputSerializer(serializers.Serializer):
        seat_id = serializers.IntegerField(min_value=1)

        class Meta:
            ref_name = "ReservationCreateInput"

    @extend_schema(
        operation_id="reservation_create",
        tags=["reservations"],
        summary="Hold a seat",
        description="Hold an available seat for RESERVATION_HOLD_SECONDS; pay before "
        "the hold expires. 409 seat_unavailable when someone else holds or bought it.",
        request=InputSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={201: ReservationSerializer, **error_responses(*WRITE_ERRORS)},
    )
    @idempotent("reservation-create")
    def post(self, request: AuthenticatedRequest) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reservation = reservation_create(
            user=request.user, seat_id=serializer.validated_data["seat_id"]
        )
        return Response(
            ReservationSerializer(reservation).data, status=status.HTTP_201_CREATED
        )


class ReservationDetailApi(APIView):
    @extend_schema(
        operation_id="reservation_retrieve",
        tags=["reservations"],
        responses={200: ReservationSerializer, **error_responses(*AUTH_ERRORS, 404)},
    )
    def get(self, request: AuthenticatedRequest, reservation_id: int) -> Response:
        reservation = selectors.reservation_get(
            user=request.user, reservation_id=reservation_id
        )
        return Response(ReservationSerializer(reservation).data)


class ReservationCancelApi(WritesThrottleMixin, APIView):
    @extend_schema(
        operation_id="reservation_cancel",
        tags=["reservations"],
        summary="Cancel an unpaid reservation",
        request=None,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={200: ReservationSerializer, **error_responses(*WRITE_ERRORS)},
    )
    @idempotent("reservation-cancel")
    def post(self, request: AuthenticatedRequest, reservation_id: int) -> Response:
        reservation = reservation_cancel(
            user=request.user, reservation_id=reservation_id
        )
        return Response(ReservationSerializer(reservation).data)


class NotificationListApi(ListAPIView):
    request: AuthenticatedRequest
    pagination_class = PageSizePagination

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Notification
            fields = ["id", "kind", "message", "created_at", "read_at"]
            ref_name = "Notification"

    serializer_class = OutputSerializer

    @extend_schema(
        operation_id="notification_list",
        tags=["notifications"],
        responses={
            200: OutputSerializer(many=True),
            **error_responses(400, *AUTH_ERRORS, 404),
        },
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self) -> QuerySet[Notification]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Notification.objects.none()
        return selectors.notification_list(user=self.request.user)
