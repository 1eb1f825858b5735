"""Thin DRF views for paying reservations and the caller's wallet.

Writes are throttled under "writes" and honour Idempotency-Key, so a client that
retries a timed-out payment or charge never pays or charges twice.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
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
from payments import selectors
from payments.models import Payment, Wallet, WalletTransaction
from payments.services import MAX_CHARGE_AMOUNT, payment_process, wallet_charge


class PaymentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Payment
        fields = ["id", "reservation_id", "amount", "created_at"]
        ref_name = "Payment"


class WalletSerializer(serializers.ModelSerializer):
    class Meta:
        model = Wallet
        fields = ["balance", "updated_at"]
        ref_name = "Wallet"


class ReservationPayApi(WritesThrottleMixin, APIView):
    @extend_schema(
        operation_id="reservation_pay",
        tags=["payments"],
        summary="Pay a held reservation from the wallet",
        description="Debits the reservation's price and marks the seat SOLD. The "
        "reservation turns CONFIRMED (with a ticket) once PaymentCompleted is handled.",
        request=None,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={201: PaymentSerializer, **error_responses(*WRITE_ERRORS)},
    )
    @idempotent("reservation-pay")
    def post(self, request: AuthenticatedRequest, reservation_id: int) -> Response:
        payment = payment_process(user=request.user, reservation_id=reservation_id)
        return Response(PaymentSerializer(payment).data, status=status.HTTP_201_CREATED)


class PaymentListApi(ListAPIView):
    request: AuthenticatedRequest
    pagination_class = PageSizePagination
    serializer_class = PaymentSerializer

    @extend_schema(
        operation_id="payment_list",
        tags=["payments"],
        responses={
            200: PaymentSerializer(many=True),
            **error_responses(400, *AUTH_ERRORS, 404),
        },
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self) -> QuerySet[Payment]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Payment.objects.none()
        return selectors.payment_list(user=self.request.user)


class PaymentDetailApi(APIView):
    @extend_schema(
        operation_id="payment_retrieve",
        tags=["payments"],
        responses={200: PaymentSerializer, **error_responses(*AUTH_ERRORS, 404)},
    )
    def get(self, request: AuthenticatedRequest, payment_id: int) -> Response:
        payment = selectors.payment_get(user=request.user, payment_id=payment_id)
        return Response(PaymentSerializer(payment).data)


class WalletDetailApi(APIView):
    @extend_schema(
        operation_id="wallet_retrieve",
        tags=["wallet"],
        responses={200: WalletSerializer, **error_responses(*AUTH_ERRORS)},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        return Response(WalletSerializer(selectors.wallet_get(user=request.user)).data)


class WalletChargeApi(WritesThrottleMixin, APIView):
    class InputSerializer(serializers.Serializer):
        amount = serializers.IntegerField(min_value=1, max_value=MAX_CHARGE_AMOUNT)

        class Meta:
            ref_name = "WalletChargeInput"

    @extend_schema(
        operation_id="wallet_charge",
        tags=["wallet"],
        summary="Add points to the wallet",
        request=InputSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses={200: WalletSerializer, **error_responses(400, 401, 403, 422, 429)},
    )
    @idempotent("wallet-charge")
    def post(self, request: AuthenticatedRequest) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        wallet = wallet_charge(
            user=request.user, amount=serializer.validated_data["amount"]
        )
        return Response(WalletSerializer(wallet).data)


class WalletTransactionListApi(ListAPIView):
    request: AuthenticatedRequest
    pagination_class = PageSizePagination

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = WalletTransaction
            fields = [
                "id",
                "kind",
                "amount",
                "balance_after",
                "payment_id",
                "created_at",
            ]
            ref_name = "WalletTransaction"

    serializer_class = OutputSerializer

    @extend_schema(
        operation_id="wallet_transaction_list",
        tags=["wallet"],
        responses={
            200: OutputSerializer(many=True),
            **error_responses(400, *AUTH_ERRORS, 404),
        },
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self) -> QuerySet[WalletTransaction]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return WalletTransaction.objects.none()
        return selectors.wallet_transaction_list(user=self.request.user)
