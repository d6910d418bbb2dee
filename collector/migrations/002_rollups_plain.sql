-- Hourly per-probe rollups for plain PostgreSQL: materialized views refreshed by the
-- collector (TimescaleDB replaces them with continuous aggregates of the same shape).
-- BRIN indexes suit append-mostly time series.
CREATE INDEX readings_signal_taken_at ON readings_signal USING brin (taken_at);
CREATE INDEX readings_latency_taken_at ON readings_latency USING brin (taken_at);
CREATE INDEX readings_power_taken_at ON readings_power USING brin (taken_at);
CREATE INDEX readings_system_taken_at ON readings_system USING brin (taken_at);

CREATE MATERIALIZED VIEW signal_hourly AS
SELECT probe_id,
       date_trunc('hour', taken_at) AS hour,
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
CREATE UNIQUE INDEX signal_hourly_key
    ON signal_hourly (probe_id, hour, operator_code, technology) NULLS NOT DISTINCT;

CREATE MATERIALIZED VIEW latency_hourly AS
SELECT probe_id,
       date_trunc('hour', taken_at) AS hour,
       target,
       count(*) AS rounds,
       avg(loss_pct) AS loss_pct_avg,
       avg(rtt_avg_ms) AS rtt_avg_ms,
       max(rtt_max_ms) AS rtt_max_ms
FROM readings_latency
GROUP BY probe_id, hour, target
WITH NO DATA;
CREATE UNIQUE INDEX latency_hourly_key ON latency_hourly (probe_id, hour, target);
