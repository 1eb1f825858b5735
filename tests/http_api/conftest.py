from tests.reservations.fixtures import (  # noqa: F401
    fresh_throttle_counts,
    user,
)
