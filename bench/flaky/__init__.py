"""A bench-only app: a handler that fails transiently at random, for `retry:run`.

Installed by bench/settings.py only (neither dev nor prod settings know it). It has no
models, so it needs no migration: a success is the handler's inbox row, which the
runner commits in the handler's transaction; a failure leaves none.
"""

# The handler's registered name, which keys its inbox rows: bench.retry reads them by it
# (from here, since importing bench.flaky.handlers would register the handler).
HANDLER_NAME = "bench.flaky"
