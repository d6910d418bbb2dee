-- TimescaleDB variant of migration 002 (chosen when the extension is available):
-- hypertables, compression, retention and hourly continuous aggregates with the same
-- names and columns as the plain-PostgreSQL materialized views, so every query above the
-- storage layer is the same. Written to the TimescaleDB 2.x API (by_range: 2.13+).
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

CREATE MATERIALIZED VIEW signal_hourly WITH (timescaledb.continuous) AS
SELECT probe_id,
       time_bucket(INTERVAL '1 hour', taken_at) AS hour,
       operator_code,
       technology,
       count(*) AS readings,
       count(*) FILTER (WHERE registration IN ('home', 'roaming')) AS registered_readings,
       avg(rsrp_dbm) AS rsrp_dbm_avg,
       min(rsrp_dbm) AS rsrp_dbm_min,
       max(rsrp_dbm) AS rsrp_dbm_max,
       avg(rssi_dbm) AS rssi_dbm_avg,
       avg(rscp_dbm) AS rscp_dbm_avg,
       avg(sinr_db) AS sinr_db_avg
FROM readings_signal
GROUP BY probe_id, hour, operator_code, technology
WITH NO DATA;

CREATE MATERIALIZED VIEW latency_hourly WITH (timescaledb.continuous) AS
SELECT probe_id,
       time_bucket(INTERVAL '1 hour', taken_at) AS hour,
       target,
       count(*) AS rounds,
       avg(loss_pct) AS loss_pct_avg,
       avg(rtt_avg_ms) AS rtt_avg_ms,
       max(rtt_max_ms) AS rtt_max_ms
FROM readings_latency
GROUP BY probe_id, hour, target
WITH NO DATA;

-- Backlogs arrive days late, so refresh the last 30 days every 30 minutes.
SELECT add_continuous_aggregate_policy('signal_hourly', start_offset => INTERVAL '30 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
SELECT add_continuous_aggregate_policy('latency_hourly', start_offset => INTERVAL '30 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
