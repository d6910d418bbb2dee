-- coverwatch schema, migration 012 on TimescaleDB, after 012_cells.sql: a hypertable like
-- readings_signal (migration 002), compressed after 30 days; kept 2 years, as the other
-- raw readings that are not the coverage record.
SELECT create_hypertable('readings_cell', by_range('taken_at', INTERVAL '7 days'));
ALTER TABLE readings_cell SET (timescaledb.compress, timescaledb.compress_segmentby = 'probe_id',
                               timescaledb.compress_orderby = 'taken_at DESC, seq DESC');
SELECT add_compression_policy('readings_cell', INTERVAL '30 days');
SELECT add_retention_policy('readings_cell', INTERVAL '2 years');
