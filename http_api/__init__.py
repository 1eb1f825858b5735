"""The shared HTTP kernel of the API: how every view speaks HTTP the same way.

Its one job is the part of the API that no app owns: the error shape and the DRF
exception handler (`api_errors`), the application error base type (`errors`),
Idempotency-Key handling and its records (`idempotency`, `models`), pagination,
throttling, the OpenAPI pieces every view shares (`api_schema`) and the read-only
admin base class (`admin`).

Dependencies point one way: `reservations`, `payments` and `config` import this
package; it imports none of them, so either app can change without the other's
HTTP behaviour moving with it.
"""
