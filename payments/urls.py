"""Routes of the payments API (included under /api/)."""

from django.urls import path

from payments import apis

app_name = "payments"

urlpatterns = [
    path(
        "reservations/<int:reservation_id>/pay/",
        apis.ReservationPayApi.as_view(),
        name="reservation-pay",
    ),
    path("payments/", apis.PaymentListApi.as_view(), name="payment-list"),
    path(
        "payments/<int:payment_id>/",
        apis.PaymentDetailApi.as_view(),
        name="payment-detail",
    ),
    path("wallet/", apis.WalletDetailApi.as_view(), name="wallet-detail"),
    path("wallet/charge/", apis.WalletChargeApi.as_view(), name="wallet-charge"),
    path(
        "wallet/transactions/",
        apis.WalletTransactionListApi.as_view(),
        name="wallet-transaction-list",
    ),
]
