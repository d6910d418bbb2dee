-- coverwatch schema, migration 007: one definition of coverage, computed in the database.
--
-- Everything that says whether a village is covered — the map, the HTTP API, the
-- reports and every Grafana coverage panel — reads the functions at the end of this
-- file, which read the hourly rollups below. Nothing else classifies readings.
--
-- The rollups (signal_hourly, latency_hourly, probe_hourly) are the same on plain
-- PostgreSQL and on TimescaleDB: a table of materialized hours (<name>_store) plus the
-- hours that changed since, aggregated from the raw readings on every read. The
-- collector marks every (probe, hour) it writes readings into in rollup_dirty, in the
-- transaction that writes them; a reader gets the materialized rows of clean hours and
-- a live aggregate of the marked ones (so the current hour and a backlog that arrived a
-- minute ago are always included), and the collector's refresher (coverage_refresh)
-- re-materializes exactly the marked hours and clears their marks. Reads are therefore
-- exact whatever the refresher's timing; it only decides how much is aggregated live.
--
-- Why not TimescaleDB continuous aggregates (migration 002 used them): a continuous
-- aggregate cannot join the thresholds table, so changing a threshold would mean
-- recreating it; its real-time part only covers hours after the watermark, so a late
-- backlog waits for a refresh policy (which, as written, never reached readings older
-- than 30 days or from the last hour); and it would make the two layouts compute
-- coverage by different code. Here they run the same SQL, tested on both.

DROP MATERIALIZED VIEW IF EXISTS signal_hourly;  -- on TimescaleDB: the continuous aggregate and its policy
DROP MATERIALIZED VIEW IF EXISTS latency_hourly;

-- ---------------------------------------------------------------- the definition's data

-- What a reading's signal class is, per technology: lower bounds (dBm, inclusive) of
-- good, fair and poor, and the column that measures it. Seeded with the values of
-- geo/thresholds.py DEFAULT_BANDS (a test keeps the two equal); change them with
-- `coverwatch db thresholds set`, which also re-marks every hour for re-aggregation.
-- A technology without a row is classed by registration only (registered = poor).
CREATE TABLE coverage_thresholds (
    technology text PRIMARY KEY,
    metric     text NOT NULL CHECK (metric IN ('rsrp_dbm', 'rscp_dbm', 'rssi_dbm')),
    good_dbm   double precision NOT NULL,
    fair_dbm   double precision NOT NULL,
    poor_dbm   double precision NOT NULL,
    source     text NOT NULL DEFAULT '',
    CHECK (good_dbm > fair_dbm AND fair_dbm > poor_dbm)
);
INSERT INTO coverage_thresholds (technology, metric, good_dbm, fair_dbm, poor_dbm, source) VALUES
    ('lte', 'rsrp_dbm', -95, -105, -115,
     'AOSP frameworks/base telephony/java/android/telephony/CellSignalStrengthLte.java sRsrpThresholds'),
    ('nr5g', 'rsrp_dbm', -95, -105, -115, 'as lte (probes report NR SS-RSRP in rsrp_dbm)'),
    ('umts', 'rscp_dbm', -95, -105, -115,
     'AOSP frameworks/base telephony/java/android/telephony/CarrierConfigManager.java KEY_WCDMA_RSCP_THRESHOLDS_INT_ARRAY'),
    ('gsm', 'rssi_dbm', -97, -103, -107,
     'AOSP frameworks/base telephony/java/android/telephony/CellSignalStrengthGsm.java GSM_RSSI_GOOD/MODERATE/POOR');

-- MCC-MNC codes and names, to put a reading without service (no code) down to the
-- probe's own SIM operator, written in probes.operator as a code or a name. Seeded with
-- geo/operators.py OPERATOR_NAMES (a test keeps the two equal).
CREATE TABLE mobile_operators (
    code text PRIMARY KEY CHECK (code ~ '^[0-9]{5,6}$'),
    name text NOT NULL UNIQUE
);
INSERT INTO mobile_operators (code, name) VALUES
    ('45201', 'MobiFone'), ('45202', 'VinaPhone'), ('45204', 'Viettel'),
    ('45205', 'Vietnamobile'), ('45207', 'Gmobile');

-- ------------------------------------------------------------------------- the rollups

-- Hours (UTC) of a probe whose rollup rows are out of date. Written by the collector in
-- the transaction that stores the readings (ON CONFLICT DO UPDATE, so that a refresher
-- holding the mark makes the writer wait instead of losing the mark).
CREATE TABLE rollup_dirty (
    probe_id  text NOT NULL,
    hour      timestamptz NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (probe_id, hour)
);
CREATE INDEX rollup_dirty_hour ON rollup_dirty (hour, probe_id);

-- Per probe, hour, network and technology. A reading's level: unregistered (no service
-- whatever the signal), weak (registered, below the poor threshold: no usable service),
-- poor (registered, at or above poor; also registered without a signal value or on a
-- technology without thresholds), fair, good.
CREATE VIEW signal_hourly_live AS
SELECT d.probe_id,
       d.hour,
       r.operator_code,
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
GROUP BY d.probe_id, d.hour, r.operator_code, r.technology;

CREATE TABLE signal_hourly_store (
    probe_id            text NOT NULL,
    hour                timestamptz NOT NULL,
    operator_code       text,
    technology          text,
    readings            bigint NOT NULL,
    registered_readings bigint NOT NULL,
    good_readings       bigint NOT NULL,
    fair_readings       bigint NOT NULL,
    poor_readings       bigint NOT NULL,
    weak_readings       bigint NOT NULL,
    signal_dbm_sum      double precision,
    signal_dbm_count    bigint NOT NULL,
    rsrp_dbm_avg        double precision,
    rsrp_dbm_min        real,
    rsrp_dbm_max        real,
    rssi_dbm_avg        double precision,
    rscp_dbm_avg        double precision,
    sinr_db_avg         double precision
);
CREATE UNIQUE INDEX signal_hourly_store_key
    ON signal_hourly_store (probe_id, hour, operator_code, technology) NULLS NOT DISTINCT;
CREATE INDEX signal_hourly_store_hour ON signal_hourly_store (hour);

CREATE VIEW signal_hourly AS
SELECT s.* FROM signal_hourly_store s
WHERE NOT EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.probe_id = s.probe_id AND d.hour = s.hour)
UNION ALL
SELECT * FROM signal_hourly_live;

-- Per probe, hour and latency target.
CREATE VIEW latency_hourly_live AS
SELECT d.probe_id,
       d.hour,
       r.target,
       count(*) AS rounds,
       avg(r.loss_pct)::float8 AS loss_pct_avg,
       avg(r.rtt_avg_ms)::float8 AS rtt_avg_ms,
       max(r.rtt_max_ms) AS rtt_max_ms,
       sum(r.packets_sent) AS packets_sent,
       sum(r.packets_received) AS packets_received,
       sum(coalesce(r.rtt_median_ms, r.rtt_avg_ms))::float8 AS rtt_median_sum,
       count(coalesce(r.rtt_median_ms, r.rtt_avg_ms)) AS rtt_median_count
FROM rollup_dirty d
JOIN readings_latency r
  ON r.probe_id = d.probe_id AND r.taken_at >= d.hour AND r.taken_at < d.hour + INTERVAL '1 hour'
GROUP BY d.probe_id, d.hour, r.target;

CREATE TABLE latency_hourly_store (
    probe_id         text NOT NULL,
    hour             timestamptz NOT NULL,
    target           text NOT NULL,
    rounds           bigint NOT NULL,
    loss_pct_avg     double precision,
    rtt_avg_ms       double precision,
    rtt_max_ms       real,
    packets_sent     bigint NOT NULL,
    packets_received bigint NOT NULL,
    rtt_median_sum   double precision,
    rtt_median_count bigint NOT NULL,
    PRIMARY KEY (probe_id, hour, target)
);
CREATE INDEX latency_hourly_store_hour ON latency_hourly_store (hour);

CREATE VIEW latency_hourly AS
SELECT s.* FROM latency_hourly_store s
WHERE NOT EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.probe_id = s.probe_id AND d.hour = s.hour)
UNION ALL
SELECT * FROM latency_hourly_live;

-- Per probe and hour: how many of the probe's report slots (one per report_interval_s,
-- counted from the epoch) have a signal reading — what "measured" means.
CREATE VIEW probe_hourly_live AS
SELECT d.probe_id,
       d.hour,
       count(*) AS signal_readings,
       count(DISTINCT floor(extract(epoch FROM r.taken_at)
                            / coalesce(p.report_interval_s, 300))) AS signal_slots
FROM rollup_dirty d
JOIN readings_signal r
  ON r.probe_id = d.probe_id AND r.taken_at >= d.hour AND r.taken_at < d.hour + INTERVAL '1 hour'
LEFT JOIN probes p ON p.probe_id = d.probe_id
GROUP BY d.probe_id, d.hour;

CREATE TABLE probe_hourly_store (
    probe_id        text NOT NULL,
    hour            timestamptz NOT NULL,
    signal_readings bigint NOT NULL,
    signal_slots    bigint NOT NULL,
    PRIMARY KEY (probe_id, hour)
);
CREATE INDEX probe_hourly_store_hour ON probe_hourly_store (hour);

CREATE VIEW probe_hourly AS
SELECT s.* FROM probe_hourly_store s
WHERE NOT EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.probe_id = s.probe_id AND d.hour = s.hour)
UNION ALL
SELECT * FROM probe_hourly_live;

-- Mark the hours of every reading taken in [p_from, p_to) (all when NULL) for
-- re-aggregation: after a bulk load that bypassed the collector, or a threshold change.
CREATE FUNCTION coverage_invalidate(p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL)
RETURNS bigint LANGUAGE sql AS $$
    WITH hours AS (
        SELECT probe_id, date_trunc('hour', taken_at, 'UTC') AS hour FROM readings_signal
        WHERE taken_at >= coalesce(p_from, '-infinity') AND taken_at < coalesce(p_to, 'infinity')
        UNION
        SELECT probe_id, date_trunc('hour', taken_at, 'UTC') FROM readings_latency
        WHERE taken_at >= coalesce(p_from, '-infinity') AND taken_at < coalesce(p_to, 'infinity')
        UNION
        SELECT probe_id, hour FROM signal_hourly_store
        WHERE hour >= coalesce(p_from, '-infinity') AND hour < coalesce(p_to, 'infinity')
    ), marked AS (
        INSERT INTO rollup_dirty (probe_id, hour)
        SELECT probe_id, hour FROM hours ORDER BY hour, probe_id
        ON CONFLICT (probe_id, hour) DO UPDATE SET marked_at = excluded.marked_at
        RETURNING 1
    )
    SELECT count(*) FROM marked
$$;

-- Re-materialize up to p_limit marked hours (oldest first) and clear their marks; the
-- number done. The "= ANY" condition is a restriction the planner pushes into the live
-- views (a join condition would not be: every marked hour would be aggregated, each call). Marks a writer holds are skipped, never waited for: the writer's hour is
-- done by a later call, and a writer never waits on this for longer than one call.
CREATE FUNCTION coverage_refresh(p_limit integer DEFAULT 2000)
RETURNS integer LANGUAGE plpgsql
SET jit = off  -- row estimates of the live views are far off; compiling costs more than it saves
AS $$
DECLARE
    v_probes text[];
    v_hours timestamptz[];
    v_hour_set timestamptz[];
BEGIN
    SELECT coalesce(array_agg(probe_id), '{}'), coalesce(array_agg(hour), '{}')
      INTO v_probes, v_hours
      FROM (SELECT probe_id, hour FROM rollup_dirty ORDER BY hour, probe_id
            LIMIT p_limit FOR UPDATE SKIP LOCKED) picked;
    IF cardinality(v_probes) = 0 THEN
        RETURN 0;
    END IF;
    -- Marks are taken oldest hour first, so they span few distinct hours: the restriction
    -- on them reaches the marks through rollup_dirty_hour (a list of probe ids would
    -- match every probe's marks of every hour), and the semi-join keeps exactly ours.
    v_hour_set := ARRAY(SELECT DISTINCT h FROM unnest(v_hours) AS h);
    DELETE FROM signal_hourly_store s USING unnest(v_probes, v_hours) m(probe_id, hour)
     WHERE s.probe_id = m.probe_id AND s.hour = m.hour;
    INSERT INTO signal_hourly_store
    SELECT l.* FROM signal_hourly_live l
     WHERE l.hour = ANY (v_hour_set)
       AND (l.probe_id, l.hour) IN (SELECT * FROM unnest(v_probes, v_hours));
    DELETE FROM latency_hourly_store s USING unnest(v_probes, v_hours) m(probe_id, hour)
     WHERE s.probe_id = m.probe_id AND s.hour = m.hour;
    INSERT INTO latency_hourly_store
    SELECT l.* FROM latency_hourly_live l
     WHERE l.hour = ANY (v_hour_set)
       AND (l.probe_id, l.hour) IN (SELECT * FROM unnest(v_probes, v_hours));
    DELETE FROM probe_hourly_store s USING unnest(v_probes, v_hours) m(probe_id, hour)
     WHERE s.probe_id = m.probe_id AND s.hour = m.hour;
    INSERT INTO probe_hourly_store
    SELECT l.* FROM probe_hourly_live l
     WHERE l.hour = ANY (v_hour_set)
       AND (l.probe_id, l.hour) IN (SELECT * FROM unnest(v_probes, v_hours));
    DELETE FROM rollup_dirty d USING unnest(v_probes, v_hours) m(probe_id, hour)
     WHERE d.probe_id = m.probe_id AND d.hour = m.hour;
    RETURN cardinality(v_probes);
END
$$;

-- Existing readings (a database upgraded from 006) are aggregated by the refresher.
SELECT coverage_invalidate();

-- ------------------------------------------------------------------ the definition

-- The class of a set of readings: the lower median of their levels (0 none, 1 poor,
-- 2 fair, 3 good), from the count at each level; NULL without readings ("unmeasured").
CREATE FUNCTION coverage_median_level(none_count bigint, poor_count bigint,
                                      fair_count bigint, good_count bigint)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN total = 0 THEN NULL
                WHEN 2 * none_count >= total THEN 0
                WHEN 2 * (none_count + poor_count) >= total THEN 1
                WHEN 2 * (none_count + poor_count + fair_count) >= total THEN 2
                ELSE 3 END
    FROM (SELECT none_count + poor_count + fair_count + good_count AS total) t
$$;

CREATE FUNCTION coverage_class_name(level integer)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((ARRAY['none', 'poor', 'fair', 'good'])[level + 1], 'unmeasured')
$$;

-- A window [p_start, p_end) is read as the whole hours (UTC) that overlap it.
-- Each probe's coverage per operator (technology 'all') and per operator and technology:
-- a reading counts for the network it is on (operator_code); one without service has no
-- code and counts for the probe's own SIM operator. availability = usable readings
-- (level >= poor) / readings; class = lower median level.
CREATE FUNCTION coverage_by_probe(p_start timestamptz, p_end timestamptz)
RETURNS TABLE (probe_id text, operator text, technology text, readings bigint,
               usable_readings bigint, good_readings bigint, fair_readings bigint,
               poor_readings bigint, weak_readings bigint, unregistered_readings bigint,
               level integer, coverage_class text, availability_pct double precision,
               signal_dbm_mean double precision)
LANGUAGE sql STABLE AS $$
    WITH sim AS (
        SELECT p.probe_id,
               coalesce((SELECT o.code FROM mobile_operators o
                         WHERE o.code = p.operator OR lower(o.name) = lower(p.operator)),
                        nullif(p.operator, ''), 'unknown') AS sim_operator
        FROM probes p
    ), hours AS (
        SELECT h.probe_id,
               coalesce(h.operator_code, sim.sim_operator, 'unknown') AS operator,
               coalesce(h.technology, 'none') AS technology,
               h.readings, h.registered_readings, h.good_readings, h.fair_readings,
               h.poor_readings, h.weak_readings, h.signal_dbm_sum, h.signal_dbm_count
        FROM signal_hourly h
        LEFT JOIN sim ON sim.probe_id = h.probe_id
        WHERE h.hour >= date_trunc('hour', p_start, 'UTC') AND h.hour < p_end
    ), grouped AS (
        SELECT probe_id, operator,
               CASE WHEN GROUPING(technology) = 1 THEN 'all' ELSE technology END AS technology,
               sum(readings)::bigint AS readings,
               sum(good_readings)::bigint AS good,
               sum(fair_readings)::bigint AS fair,
               sum(poor_readings)::bigint AS poor,
               sum(weak_readings)::bigint AS weak,
               sum(readings - registered_readings)::bigint AS unregistered,
               sum(signal_dbm_sum) / nullif(sum(signal_dbm_count), 0) AS signal_dbm_mean
        FROM hours
        GROUP BY GROUPING SETS ((probe_id, operator), (probe_id, operator, technology))
    )
    SELECT probe_id, operator, technology, readings, good + fair + poor, good, fair, poor,
           weak, unregistered,
           coverage_median_level(readings - good - fair - poor, poor, fair, good),
           coverage_class_name(coverage_median_level(readings - good - fair - poor, poor, fair, good)),
           100.0 * (good + fair + poor) / readings,
           signal_dbm_mean
    FROM grouped
$$;

-- Village/probe pairs within p_radius_m (great-circle distance on a sphere of radius
-- 6,371,008.8 m), weighted 1 / max(distance, p_min_distance_m)²: a probe inside the
-- village counts fully, one in the next valley less. A box on latitude/longitude that
-- surely holds the circle lets the probes (lat) index pick the candidates.
CREATE INDEX probes_lat ON probes (lat);
CREATE FUNCTION coverage_village_pairs(p_radius_m double precision,
                                       p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint, probe_id text, distance_m double precision,
               weight double precision)
LANGUAGE sql STABLE AS $$
    SELECT v.village_id, p.probe_id, d.distance_m,
           1.0 / power(greatest(d.distance_m, p_min_distance_m), 2)
    FROM villages v
    CROSS JOIN LATERAL (
        -- At least 1 mm: a radius of 5e-324 m would underflow (an error in PostgreSQL).
        SELECT degrees(greatest(p_radius_m, 1e-3) / 6371008.8) * 1.0001 AS dlat,
               greatest(p_radius_m, 1e-3) AS radius_m
    ) box
    JOIN probes p
      ON p.lat BETWEEN v.lat - box.dlat AND v.lat + box.dlat
     AND abs(p.lon - v.lon) <= CASE
            WHEN abs(v.lat) + box.dlat >= 89.9 THEN 360
            ELSE 1.0001 * degrees(2 * asin(least(1.0, sin(box.radius_m / 6371008.8 / 2)
                                                  / cos(radians(abs(v.lat) + box.dlat)))))
         END
    CROSS JOIN LATERAL (
        SELECT 2 * 6371008.8 * asin(sqrt(least(1.0,
                   power(sin(radians(p.lat - v.lat) / 2), 2)
                   + cos(radians(v.lat)) * cos(radians(p.lat))
                     * power(sin(radians(p.lon - v.lon) / 2), 2)))) AS distance_m
    ) d
    WHERE p.lat IS NOT NULL AND p.lon IS NOT NULL AND d.distance_m <= p_radius_m
$$;

-- Each village's coverage per operator: the weighted mean of the availability of the
-- probes within the radius that measured the operator, and the weighted mean of their
-- class levels rounded half down (conservative). A village/operator without such a
-- probe has no row: it is unmeasured, never "none".
CREATE FUNCTION coverage_by_village(p_start timestamptz, p_end timestamptz,
                                    p_radius_m double precision DEFAULT 3000,
                                    p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint, operator text, availability_pct double precision,
               level integer, coverage_class text, probes bigint, readings bigint)
LANGUAGE sql STABLE AS $$
    WITH probe_ops AS (
        SELECT c.probe_id, c.operator, c.level, c.availability_pct, c.readings
        FROM coverage_by_probe(p_start, p_end) c
        WHERE c.technology = 'all'
    ), combined AS (
        SELECT pr.village_id, po.operator,
               sum(pr.weight * po.availability_pct) / sum(pr.weight) AS availability_pct,
               sum(pr.weight * po.level) / sum(pr.weight) AS mean_level,
               count(*) AS probes,
               sum(po.readings)::bigint AS readings
        FROM coverage_village_pairs(p_radius_m, p_min_distance_m) pr
        JOIN probe_ops po ON po.probe_id = pr.probe_id
        GROUP BY pr.village_id, po.operator
    )
    SELECT village_id, operator, availability_pct,
           least(3, greatest(0, ceil(mean_level - 0.5 - 1e-9)))::integer,
           coverage_class_name(least(3, greatest(0, ceil(mean_level - 0.5 - 1e-9)))::integer),
           probes, readings
    FROM combined
$$;
