"""The CDC relay's control: Debezium (in Kafka Connect) reading the outbox from the WAL.

With OUTBOX_RELAY=cdc, `events.publish` inserts and deletes its outbox row in one
transaction and Debezium's PostgreSQL connector sends the insert from the WAL through
its Outbox Event Router. This package builds that connector's configuration from the
settings (`connector.py`), creates the publication and the replication slot it reads
(`database.py`) and registers it with Kafka Connect's REST API (`rest.py`), checking
its offsets against the slot and the slot's unsent events (`lifecycle.py`); `manage.py
cdc_connector` is its entry point. It sends nothing itself. It depends only on
events.core and the models.
"""
