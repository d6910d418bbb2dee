-- coverwatch schema, migration 008: multi-modem kits.
--
-- A probe kit may carry several modems (one SIM per operator), each a [[sensors.cellular]]
-- table of the probe's config. Its signal readings say which modem took them (modem: the
-- table's name) and the home network of the SIM in it (sim_operator_code: MCC-MNC from the
-- IMSI), which is known even when the modem has no service. Both are optional in protocol
-- v1, so both columns are nullable: readings of one-modem probes and of probes that
-- predate them have neither. Adding a nullable column without a default is a catalog
-- change only, on plain tables and on (compressed) TimescaleDB hypertables alike.
ALTER TABLE readings_signal ADD COLUMN modem text;
ALTER TABLE readings_signal ADD COLUMN sim_operator_code text;
COMMENT ON COLUMN readings_signal.modem IS
    'the modem of a multi-modem kit that took the reading ([[sensors.cellular]] name)';
COMMENT ON COLUMN readings_signal.sim_operator_code IS
    'MCC-MNC of the SIM''s home network (from its IMSI); operator_code is the network it is on';

-- The one change to the coverage definition: a reading without service (no
-- operator_code) counts for the network of the SIM that found none, when the probe says
-- which; otherwise, as before, for the probe's own SIM operator (probes.operator, read
-- in coverage_by_probe). A kit with three SIMs thus has each modem's dead zone counted
-- for its own operator. Same columns, names and types as migration 007's view, so the
-- views built on it (signal_hourly) are untouched; rows stored before have no
-- sim_operator_code and aggregate exactly as before (no hour needs re-materializing).
CREATE OR REPLACE VIEW signal_hourly_live AS
SELECT d.probe_id,
       d.hour,
       coalesce(r.operator_code, r.sim_operator_code) AS operator_code,
       r.technology,
       count(*) AS readings,
       count(*) FILTER (WHERE r.registration IN ('home', 'roaming')) AS registered_readings,
       count(*) FILTER (WHERE lv.level = 3) AS good_readings,
       count(*) FILTER (WHERE lv.level = 2) AS fair_readings,
       count(*) FILTER (WHERE lv.level = 1) AS poor_readings,
       count(*) FILTER (WHERE lv.level = -1) AS weak_readings,
       sum(m.signal_dbm) AS signal_dbm_sum,
       count(m.signal_dbm) AS signal_dbm_count,
       avg(r.rsrp_dbm) AS rsrp_dbm_avg,
       min(r.rsrp_dbm) AS rsrp_dbm_min,
       max(r.rsrp_dbm) AS rsrp_dbm_max,
       avg(r.rssi_dbm) AS rssi_dbm_avg,
       avg(r.rscp_dbm) AS rscp_dbm_avg,
       avg(r.sinr_db) AS sinr_db_avg
FROM rollup_dirty d
JOIN readings_signal r
  ON r.probe_id = d.probe_id AND r.taken_at >= d.hour AND r.taken_at < d.hour + INTERVAL '1 hour'
LEFT JOIN coverage_thresholds t ON t.technology = r.technology
CROSS JOIN LATERAL (
    SELECT (CASE t.metric WHEN 'rssi_dbm' THEN r.rssi_dbm
                          WHEN 'rscp_dbm' THEN r.rscp_dbm
                          WHEN 'rsrp_dbm' THEN r.rsrp_dbm
                          ELSE coalesce(r.rsrp_dbm, r.rscp_dbm, r.rssi_dbm) END)::float8 AS signal_dbm
) m
CROSS JOIN LATERAL (
    SELECT CASE WHEN r.registration NOT IN ('home', 'roaming') THEN 0
                WHEN t.technology IS NULL OR m.signal_dbm IS NULL THEN 1
                WHEN m.signal_dbm >= t.good_dbm THEN 3
                WHEN m.signal_dbm >= t.fair_dbm THEN 2
                WHEN m.signal_dbm >= t.poor_dbm THEN 1
                ELSE -1 END AS level
) lv
GROUP BY d.probe_id, d.hour, coalesce(r.operator_code, r.sim_operator_code), r.technology;
