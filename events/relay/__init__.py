"""The outbox relay.

The processes (one leader per shard of the outbox, with hot standbys) that move
committed outbox rows to Kafka in order. Entry point: events.relay.outbox_relay.
OutboxRelay. One module per job:

- outbox_relay: sessions until stopped (lead or stand by, reconnect), the contract
- leadership: leading shards, waiting as a hot standby, the reconnect backoff
- shards: which shards a relay leads (its share, claimed and released)
- shard_lock_keys: the advisory locks of leaders and members
- shard_count: the shard count all relays share, checked at join
- shard_sql: the shard of a row as SQL (the key's hash)
- shard_statistics: the planner's statistics on that expression
- database: the relay's own connections, and the errors that end a session
- window: what one read takes (windows of commit time, FETCH_SQL)
- reader: reading windows on the leader's connection, one ahead; NOTIFY wake-ups
- sending: producing a batch, the per-row hot path, delivery outcomes
- recorder: writing the broker's answers (delete, log, park) in a thread of its own
- loop_state: the loop's state between iterations and the rules that move it
- pipeline: the loop that composes reader, sender, recorder and state
"""
