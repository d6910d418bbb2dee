-- coverwatch schema, migration 011 on TimescaleDB, after 011_operator_scan.sql: the table
-- made a hypertable with long chunks, since a probe scans a few times a day at most. Like
-- signal, scans are part of the coverage record: no retention, and too few rows to be
-- worth compressing.
SELECT create_hypertable('readings_operator_scan', by_range('taken_at', INTERVAL '90 days'));
