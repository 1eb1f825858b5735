from tests.reservations.fixtures import (  # noqa: F401
    anon_client,
    api,
    client_for,
    fresh_throttle_counts,
    funded_user,
    other_user,
    performance,
    reservation,
    seat,
    user,
)
