-- TimescaleDB variant of migration 002 (chosen when the extension can be created):
-- hypertables, compression and retention. Written to the TimescaleDB 2.x API (by_range: 2.13+).
-- All tables are still empty when this runs (it follows 001 directly).
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('readings_signal', by_range('taken_at', INTERVAL '7 days'));
SELECT create_hypertable('readings_latency', by_range('taken_at', INTERVAL '7 days'));
SELECT create_hypertable('readings_power', by_range('taken_at', INTERVAL '7 days'));
SELECT create_hypertable('readings_outage', by_range('taken_at', INTERVAL '90 days'));
SELECT create_hypertable('readings_throughput', by_range('taken_at', INTERVAL '90 days'));
SELECT create_hypertable('readings_system', by_range('taken_at', INTERVAL '7 days'));
SELECT create_hypertable('readings_sensor_error', by_range('taken_at', INTERVAL '30 days'));

-- Compress chunks older than 30 days, segmented by probe (queries are per probe).
ALTER TABLE readings_signal SET (timescaledb.compress, timescaledb.compress_segmentby = 'probe_id',
                                 timescaledb.compress_orderby = 'taken_at DESC, seq DESC');
ALTER TABLE readings_latency SET (timescaledb.compress, timescaledb.compress_segmentby = 'probe_id',
                                  timescaledb.compress_orderby = 'taken_at DESC, seq DESC');
ALTER TABLE readings_power SET (timescaledb.compress, timescaledb.compress_segmentby = 'probe_id',
                                timescaledb.compress_orderby = 'taken_at DESC, seq DESC');
ALTER TABLE readings_system SET (timescaledb.compress, timescaledb.compress_segmentby = 'probe_id',
                                 timescaledb.compress_orderby = 'taken_at DESC, seq DESC');
SELECT add_compression_policy('readings_signal', INTERVAL '30 days');
SELECT add_compression_policy('readings_latency', INTERVAL '30 days');
SELECT add_compression_policy('readings_power', INTERVAL '30 days');
SELECT add_compression_policy('readings_system', INTERVAL '30 days');

-- Raw probe-health readings are kept 2 years; signal, outages and throughput (the
-- coverage record) are kept: coverage planning needs the history.
SELECT add_retention_policy('readings_latency', INTERVAL '2 years');
SELECT add_retention_policy('readings_power', INTERVAL '2 years');
SELECT add_retention_policy('readings_system', INTERVAL '2 years');
SELECT add_retention_policy('readings_sensor_error', INTERVAL '2 years');

-- The hourly rollups this migration first created as continuous aggregates (with a
-- refresh policy) are defined by migration 007 instead, the same on both layouts. They
-- are no longer created here: 007 dropping them on a new database raced the policy's
-- first background job ("tuple concurrently updated"). Databases created before keep
-- them until 007 drops them.
