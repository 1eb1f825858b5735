"""The outbox relay.

The one process (a leader, with hot standbys) that moves committed outbox rows to Kafka
in order. Entry point: events.relay.outbox_relay.OutboxRelay. One module per job:

- outbox_relay: sessions until stopped (lead or stand by, reconnect), the contract
- leadership: the leader lock, waiting as a hot standby, the reconnect backoff
- database: the relay's own connections, and the errors that end a session
- window: what one read takes (windows of commit time, FETCH_SQL)
- reader: reading windows on the leader's connection, one ahead; NOTIFY wake-ups
- sending: producing a batch, the per-row hot path, delivery outcomes
- recorder: writing the broker's answers (delete, log, park) in a thread of its own
- loop_state: the loop's state between iterations and the rules that move it
- pipeline: the loop that composes reader, sender, recorder and state
"""
