from tests.reservations.fixtures import (  # noqa: F401
    anon_client,
    api,
    client_for,
    fresh_throttle_counts,
    other_user,
    performance,
    seat,
    user,
)
