-- Daily rollups under the hourly ones, so that a month of a province reads in a fraction
-- of a second (bench/geo.py: 2,000 probes x 30 days is 2 M hourly signal rows, 80 k daily).
--
-- The definition does not change: a window is still the whole UTC hours that overlap
-- it, and every figure follows from the same hourly counts. A day (UTC) of a probe is
-- read from signal_daily / probe_daily only when the window holds all its 24 hours; the
-- window's partial days at either end come from the hourly rollups.
--
-- Exact at every moment, like the hourly rollups: a day row is re-aggregated from the
-- hourly stores by coverage_refresh() in the transaction that refreshes one of its
-- hours, and until then any day of a probe with a marked hour is aggregated on the fly
-- from signal_hourly / probe_hourly (which themselves aggregate marked hours from raw).

CREATE TABLE signal_daily_store (
    probe_id            text NOT NULL,
    day                 timestamptz NOT NULL,
    operator_code       text,
    technology          text,
    readings            bigint NOT NULL,
    registered_readings bigint NOT NULL,
    good_readings       bigint NOT NULL,
    fair_readings       bigint NOT NULL,
    poor_readings       bigint NOT NULL,
    weak_readings       bigint NOT NULL,
    signal_dbm_sum      double precision,
    signal_dbm_count    bigint NOT NULL
);
CREATE UNIQUE INDEX signal_daily_store_key
    ON signal_daily_store (probe_id, day, operator_code, technology) NULLS NOT DISTINCT;
CREATE INDEX signal_daily_store_day ON signal_daily_store (day);

-- Per probe and day: report slots measured (probe_hourly) and latency over all targets.
CREATE TABLE probe_daily_store (
    probe_id         text NOT NULL,
    day              timestamptz NOT NULL,
    signal_slots     bigint NOT NULL,
    latency_rounds   bigint NOT NULL,
    packets_sent     bigint NOT NULL,
    packets_received bigint NOT NULL,
    rtt_median_sum   double precision,
    rtt_median_count bigint NOT NULL,
    PRIMARY KEY (probe_id, day)
);
CREATE INDEX probe_daily_store_day ON probe_daily_store (day);

-- Days (UTC) of a probe whose daily rows are out of date because coverage_refresh()
-- re-materialized some of their hours. Not unique on purpose: refreshers append marks
-- without ever waiting for each other, and coverage_refresh_days() takes the marks it
-- can lock, rebuilds their days and deletes exactly those marks; a mark added meanwhile
-- by a refresher whose hours the rebuild could not see yet stays for the next round.
CREATE TABLE rollup_dirty_day (
    probe_id  text NOT NULL,
    day       timestamptz NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollup_dirty_day_key ON rollup_dirty_day (probe_id, day);

-- A probe's day from the public hourly views (their live part aggregates marked hours
-- from raw readings): what stands in for a day that has a marked hour.
CREATE FUNCTION coverage_signal_days(p_probes text[], p_days timestamptz[])
RETURNS TABLE (probe_id text, day timestamptz, operator_code text, technology text,
               readings bigint, registered_readings bigint, good_readings bigint,
               fair_readings bigint, poor_readings bigint, weak_readings bigint,
               signal_dbm_sum double precision, signal_dbm_count bigint)
LANGUAGE sql STABLE AS $$
    SELECT h.probe_id, m.day, h.operator_code, h.technology,
           sum(h.readings)::bigint, sum(h.registered_readings)::bigint,
           sum(h.good_readings)::bigint, sum(h.fair_readings)::bigint,
           sum(h.poor_readings)::bigint, sum(h.weak_readings)::bigint,
           sum(h.signal_dbm_sum), sum(h.signal_dbm_count)::bigint
    FROM unnest(p_probes, p_days) m(probe_id, day)
    JOIN signal_hourly h
      ON h.probe_id = m.probe_id AND h.hour >= m.day AND h.hour < m.day + INTERVAL '1 day'
    GROUP BY h.probe_id, m.day, h.operator_code, h.technology
$$;

CREATE FUNCTION coverage_probe_days(p_probes text[], p_days timestamptz[])
RETURNS TABLE (probe_id text, day timestamptz, signal_slots bigint, latency_rounds bigint,
               packets_sent bigint, packets_received bigint,
               rtt_median_sum double precision, rtt_median_count bigint)
LANGUAGE sql STABLE AS $$
    WITH slots AS (
        SELECT h.probe_id, m.day, sum(h.signal_slots)::bigint AS signal_slots
        FROM unnest(p_probes, p_days) m(probe_id, day)
        JOIN probe_hourly h
          ON h.probe_id = m.probe_id AND h.hour >= m.day AND h.hour < m.day + INTERVAL '1 day'
        GROUP BY h.probe_id, m.day
    ), latency AS (
        SELECT l.probe_id, m.day, sum(l.rounds)::bigint AS rounds,
               sum(l.packets_sent)::bigint AS packets_sent,
               sum(l.packets_received)::bigint AS packets_received,
               sum(l.rtt_median_sum) AS rtt_median_sum,
               sum(l.rtt_median_count)::bigint AS rtt_median_count
        FROM unnest(p_probes, p_days) m(probe_id, day)
        JOIN latency_hourly l
          ON l.probe_id = m.probe_id AND l.hour >= m.day AND l.hour < m.day + INTERVAL '1 day'
        GROUP BY l.probe_id, m.day
    )
    SELECT coalesce(s.probe_id, l.probe_id), coalesce(s.day, l.day),
           coalesce(s.signal_slots, 0), coalesce(l.rounds, 0), coalesce(l.packets_sent, 0),
           coalesce(l.packets_received, 0), l.rtt_median_sum, coalesce(l.rtt_median_count, 0)
    FROM slots s FULL JOIN latency l ON l.probe_id = s.probe_id AND l.day = s.day
$$;

-- The days (UTC) of a probe whose daily rows are out of date: a marked hour, or a
-- day mark.
CREATE VIEW rollup_dirty_days AS
SELECT probe_id, date_trunc('day', hour, 'UTC') AS day FROM rollup_dirty
UNION
SELECT probe_id, day FROM rollup_dirty_day;

CREATE VIEW signal_daily AS
SELECT s.* FROM signal_daily_store s
WHERE NOT EXISTS (SELECT 1 FROM rollup_dirty d
                  WHERE d.probe_id = s.probe_id
                    AND d.hour >= s.day AND d.hour < s.day + INTERVAL '1 day')
  AND NOT EXISTS (SELECT 1 FROM rollup_dirty_day dd
                  WHERE dd.probe_id = s.probe_id AND dd.day = s.day)
UNION ALL
SELECT f.* FROM (SELECT array_agg(probe_id) AS probes, array_agg(day) AS days
                 FROM rollup_dirty_days) dd
CROSS JOIN LATERAL coverage_signal_days(dd.probes, dd.days) f
WHERE dd.probes IS NOT NULL;

CREATE VIEW probe_daily AS
SELECT s.* FROM probe_daily_store s
WHERE NOT EXISTS (SELECT 1 FROM rollup_dirty d
                  WHERE d.probe_id = s.probe_id
                    AND d.hour >= s.day AND d.hour < s.day + INTERVAL '1 day')
  AND NOT EXISTS (SELECT 1 FROM rollup_dirty_day dd
                  WHERE dd.probe_id = s.probe_id AND dd.day = s.day)
UNION ALL
SELECT f.* FROM (SELECT array_agg(probe_id) AS probes, array_agg(day) AS days
                 FROM rollup_dirty_days) dd
CROSS JOIN LATERAL coverage_probe_days(dd.probes, dd.days) f
WHERE dd.probes IS NOT NULL;

-- How a window [p_start, p_end) splits: its hours are [first_hour, end_hour); the whole
-- days among them [first_day, end_day) (empty when first_day >= end_day) are read from
-- the daily rollups, the rest from the hourly ones.
CREATE FUNCTION coverage_window_split(p_start timestamptz, p_end timestamptz)
RETURNS TABLE (first_hour timestamptz, first_day timestamptz, end_day timestamptz,
               end_hour timestamptz)
LANGUAGE sql IMMUTABLE AS $$
    SELECT w.first_hour,
           CASE WHEN d.first_day < d.end_day THEN d.first_day ELSE w.end_hour END,
           CASE WHEN d.first_day < d.end_day THEN d.end_day ELSE w.end_hour END,
           w.end_hour
    FROM (SELECT date_trunc('hour', p_start, 'UTC') AS first_hour,
                 -- The hour holding the window's last instant, plus one: hours < p_end
                 -- (none when the window is empty).
                 greatest(date_trunc('hour', p_start, 'UTC'),
                          date_trunc('hour', p_end - INTERVAL '1 microsecond', 'UTC')
                              + INTERVAL '1 hour') AS end_hour) w
    CROSS JOIN LATERAL (
        SELECT CASE WHEN date_trunc('day', w.first_hour, 'UTC') = w.first_hour
                    THEN w.first_hour
                    ELSE date_trunc('day', w.first_hour, 'UTC') + INTERVAL '1 day' END
                   AS first_day,
               date_trunc('day', w.end_hour, 'UTC') AS end_day
    ) d
$$;

-- coverage_by_probe as in 007, reading whole days from the daily rollups. The first
-- aggregation (per probe, network and technology) is a small hash table whatever the
-- window; only then are the SIM operator and the 'all' rows added.
CREATE OR REPLACE FUNCTION coverage_by_probe(p_start timestamptz, p_end timestamptz)
RETURNS TABLE (probe_id text, operator text, technology text, readings bigint,
               usable_readings bigint, good_readings bigint, fair_readings bigint,
               poor_readings bigint, weak_readings bigint, unregistered_readings bigint,
               level integer, coverage_class text, availability_pct double precision,
               signal_dbm_mean double precision)
LANGUAGE sql STABLE
SET jit = off  -- compiling took 1.4 s of an 11 s query on the province benchmark
AS $$
    WITH w AS MATERIALIZED (
        -- Bounds as scalar subqueries below: each range then reaches the rollups' hour
        -- and day indexes (a join with this row scanned every hourly row).
        SELECT * FROM coverage_window_split(p_start, p_end)
    ), rows AS (
        SELECT h.probe_id, h.operator_code, h.technology, h.readings, h.registered_readings,
               h.good_readings, h.fair_readings, h.poor_readings, h.weak_readings,
               h.signal_dbm_sum, h.signal_dbm_count
        FROM signal_hourly h
        WHERE h.hour >= (SELECT first_hour FROM w) AND h.hour < (SELECT first_day FROM w)
        UNION ALL
        SELECT h.probe_id, h.operator_code, h.technology, h.readings, h.registered_readings,
               h.good_readings, h.fair_readings, h.poor_readings, h.weak_readings,
               h.signal_dbm_sum, h.signal_dbm_count
        FROM signal_hourly h
        WHERE h.hour >= (SELECT end_day FROM w) AND h.hour < (SELECT end_hour FROM w)
        UNION ALL
        SELECT d.probe_id, d.operator_code, d.technology, d.readings, d.registered_readings,
               d.good_readings, d.fair_readings, d.poor_readings, d.weak_readings,
               d.signal_dbm_sum, d.signal_dbm_count
        FROM signal_daily d
        WHERE d.day >= (SELECT first_day FROM w) AND d.day < (SELECT end_day FROM w)
    ), per_network AS (
        SELECT probe_id, operator_code, technology,
               sum(readings) AS readings, sum(registered_readings) AS registered_readings,
               sum(good_readings) AS good_readings, sum(fair_readings) AS fair_readings,
               sum(poor_readings) AS poor_readings, sum(weak_readings) AS weak_readings,
               sum(signal_dbm_sum) AS signal_dbm_sum, sum(signal_dbm_count) AS signal_dbm_count
        FROM rows
        GROUP BY probe_id, operator_code, technology
    ), sim AS (
        SELECT p.probe_id,
               coalesce((SELECT o.code FROM mobile_operators o
                         WHERE o.code = p.operator OR lower(o.name) = lower(p.operator)),
                        nullif(p.operator, ''), 'unknown') AS sim_operator
        FROM probes p
    ), hours AS (
        SELECT n.probe_id,
               coalesce(n.operator_code, sim.sim_operator, 'unknown') AS operator,
               coalesce(n.technology, 'none') AS technology,
               n.readings, n.registered_readings, n.good_readings, n.fair_readings,
               n.poor_readings, n.weak_readings, n.signal_dbm_sum, n.signal_dbm_count
        FROM per_network n
        LEFT JOIN sim ON sim.probe_id = n.probe_id
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

-- Per probe over a window: report slots with a signal reading and latency over all
-- targets (what geo's probe status shows besides coverage). A probe without any
-- rollup row in the window has no row.
CREATE FUNCTION coverage_probe_activity(p_start timestamptz, p_end timestamptz)
RETURNS TABLE (probe_id text, signal_slots bigint, latency_rounds bigint,
               rtt_ms double precision, loss_pct double precision)
LANGUAGE sql STABLE
SET jit = off
AS $$
    WITH w AS MATERIALIZED (
        -- Bounds as scalar subqueries below: each range then reaches the rollups' hour
        -- and day indexes (a join with this row scanned every hourly row).
        SELECT * FROM coverage_window_split(p_start, p_end)
    ), rows AS (
        SELECT h.probe_id, h.signal_slots, 0::bigint AS rounds, 0::bigint AS packets_sent,
               0::bigint AS packets_received, NULL::float8 AS rtt_median_sum,
               0::bigint AS rtt_median_count
        FROM probe_hourly h
        WHERE (h.hour >= (SELECT first_hour FROM w) AND h.hour < (SELECT first_day FROM w))
           OR (h.hour >= (SELECT end_day FROM w) AND h.hour < (SELECT end_hour FROM w))
        UNION ALL
        SELECT l.probe_id, 0, l.rounds, l.packets_sent, l.packets_received, l.rtt_median_sum,
               l.rtt_median_count
        FROM latency_hourly l
        WHERE (l.hour >= (SELECT first_hour FROM w) AND l.hour < (SELECT first_day FROM w))
           OR (l.hour >= (SELECT end_day FROM w) AND l.hour < (SELECT end_hour FROM w))
        UNION ALL
        SELECT d.probe_id, d.signal_slots, d.latency_rounds, d.packets_sent,
               d.packets_received, d.rtt_median_sum, d.rtt_median_count
        FROM probe_daily d
        WHERE d.day >= (SELECT first_day FROM w) AND d.day < (SELECT end_day FROM w)
    )
    SELECT probe_id, sum(signal_slots)::bigint, sum(rounds)::bigint,
           sum(rtt_median_sum) / nullif(sum(rtt_median_count), 0),
           100.0 * sum(packets_sent - packets_received) / nullif(sum(packets_sent), 0)
    FROM rows
    GROUP BY probe_id
$$;

-- Rebuild the daily rows of these probe-days from the hourly stores (not the views: a
-- day with an hour still marked is not read from its daily row anyway, and is rebuilt
-- again when that hour is refreshed; the views' live part would aggregate every marked
-- hour from raw readings on each call).
CREATE FUNCTION coverage_rebuild_days(p_probes text[], p_days timestamptz[])
RETURNS void LANGUAGE sql AS $$
    DELETE FROM signal_daily_store s USING unnest(p_probes, p_days) m(probe_id, day)
     WHERE s.probe_id = m.probe_id AND s.day = m.day;
    INSERT INTO signal_daily_store
    SELECT h.probe_id, m.day, h.operator_code, h.technology,
           sum(h.readings), sum(h.registered_readings), sum(h.good_readings),
           sum(h.fair_readings), sum(h.poor_readings), sum(h.weak_readings),
           sum(h.signal_dbm_sum), sum(h.signal_dbm_count)
    FROM unnest(p_probes, p_days) m(probe_id, day)
    JOIN signal_hourly_store h
      ON h.probe_id = m.probe_id AND h.hour >= m.day AND h.hour < m.day + INTERVAL '1 day'
    GROUP BY h.probe_id, m.day, h.operator_code, h.technology;
    DELETE FROM probe_daily_store s USING unnest(p_probes, p_days) m(probe_id, day)
     WHERE s.probe_id = m.probe_id AND s.day = m.day;
    INSERT INTO probe_daily_store
    WITH slots AS (
        SELECT h.probe_id, m.day, sum(h.signal_slots) AS signal_slots
        FROM unnest(p_probes, p_days) m(probe_id, day)
        JOIN probe_hourly_store h
          ON h.probe_id = m.probe_id AND h.hour >= m.day AND h.hour < m.day + INTERVAL '1 day'
        GROUP BY h.probe_id, m.day
    ), latency AS (
        SELECT l.probe_id, m.day, sum(l.rounds) AS rounds, sum(l.packets_sent) AS packets_sent,
               sum(l.packets_received) AS packets_received,
               sum(l.rtt_median_sum) AS rtt_median_sum,
               sum(l.rtt_median_count) AS rtt_median_count
        FROM unnest(p_probes, p_days) m(probe_id, day)
        JOIN latency_hourly_store l
          ON l.probe_id = m.probe_id AND l.hour >= m.day AND l.hour < m.day + INTERVAL '1 day'
        GROUP BY l.probe_id, m.day
    )
    SELECT coalesce(s.probe_id, l.probe_id), coalesce(s.day, l.day),
           coalesce(s.signal_slots, 0), coalesce(l.rounds, 0), coalesce(l.packets_sent, 0),
           coalesce(l.packets_received, 0), l.rtt_median_sum, coalesce(l.rtt_median_count, 0)
    FROM slots s FULL JOIN latency l ON l.probe_id = s.probe_id AND l.day = s.day;
$$;

-- coverage_refresh as in 007; the days of the hours it refreshed get a day mark, for
-- coverage_refresh_days().
CREATE OR REPLACE FUNCTION coverage_refresh(p_limit integer DEFAULT 2000)
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
    -- In the same transaction as the marks' deletion: the day is never seen as clean.
    INSERT INTO rollup_dirty_day (probe_id, day)
    SELECT DISTINCT probe_id, date_trunc('day', hour, 'UTC')
    FROM unnest(v_probes, v_hours) m(probe_id, hour);
    DELETE FROM rollup_dirty d USING unnest(v_probes, v_hours) m(probe_id, hour)
     WHERE d.probe_id = m.probe_id AND d.hour = m.hour;
    RETURN cardinality(v_probes);
END
$$;

-- Rebuild the days of up to p_limit day marks from the hourly stores and delete those
-- marks; the number of marks done (a day has a mark per refresh that touched it, so
-- fewer days). Marks another session holds are skipped.
CREATE FUNCTION coverage_refresh_days(p_limit integer DEFAULT 2000)
RETURNS integer LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    v_marks tid[];
    v_probes text[];
    v_days timestamptz[];
    v_key1 integer;
    v_key2 integer;
BEGIN
    SELECT coalesce(array_agg(ctid), '{}') INTO v_marks
      FROM (SELECT ctid FROM rollup_dirty_day ORDER BY day, probe_id
            LIMIT p_limit FOR UPDATE SKIP LOCKED) picked;
    IF cardinality(v_marks) = 0 THEN
        RETURN 0;
    END IF;
    SELECT coalesce(array_agg(probe_id ORDER BY probe_id, day), '{}'),
           coalesce(array_agg(day ORDER BY probe_id, day), '{}')
      INTO v_probes, v_days
      FROM (SELECT DISTINCT probe_id, day FROM rollup_dirty_day
            WHERE ctid = ANY (v_marks)) days;
    -- Two sessions may hold marks of the same day: the second rebuilds it after the
    -- first committed (its statements then see the first's rows), never beside it. The
    -- locks are taken in one order, so rebuilders cannot deadlock.
    FOR v_key1, v_key2 IN
        SELECT DISTINCT hashtext(m.probe_id), (extract(epoch FROM m.day) / 86400)::integer
        FROM unnest(v_probes, v_days) m(probe_id, day)
        ORDER BY 1, 2
    LOOP
        PERFORM pg_advisory_xact_lock(v_key1, v_key2);
    END LOOP;
    PERFORM coverage_rebuild_days(v_probes, v_days);
    DELETE FROM rollup_dirty_day WHERE ctid = ANY (v_marks);
    RETURN cardinality(v_marks);
END
$$;

-- Days of readings already aggregated hourly (a database upgraded from 007).
SELECT coverage_rebuild_days(coalesce(array_agg(probe_id), '{}'), coalesce(array_agg(day), '{}'))
FROM (SELECT DISTINCT probe_id, date_trunc('day', hour, 'UTC') AS day
      FROM probe_hourly_store) days;

-- Village/probe pairs as in 007, the candidates found through a 2-D index on the probes'
-- positions (007's latitude index left ~100 candidates per village in a province, each
-- tested with trigonometry: 2 s for 10,000 villages; the box leaves a handful).
CREATE INDEX probes_position ON probes USING gist (point(lon, lat));
CREATE OR REPLACE FUNCTION coverage_village_pairs(p_radius_m double precision,
                                                  p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint, probe_id text, distance_m double precision,
               weight double precision)
LANGUAGE sql STABLE ROWS 200000 AS $$
    SELECT v.village_id, p.probe_id, d.distance_m,
           1.0 / power(greatest(d.distance_m, p_min_distance_m), 2)
    FROM villages v
    CROSS JOIN LATERAL (
        -- At least 1 mm: a radius of 5e-324 m would underflow (an error in PostgreSQL).
        SELECT degrees(greatest(p_radius_m, 1e-3) / 6371008.8) * 1.0001 AS dlat,
               greatest(p_radius_m, 1e-3) AS radius_m
    ) box
    CROSS JOIN LATERAL (
        SELECT CASE
                   WHEN abs(v.lat) + box.dlat >= 89.9 THEN 360
                   ELSE 1.0001 * degrees(2 * asin(least(1.0, sin(box.radius_m / 6371008.8 / 2)
                                                       / cos(radians(abs(v.lat) + box.dlat)))))
               END AS dlon
    ) lon_box
    JOIN probes p
      ON point(p.lon, p.lat) <@ box(point(v.lon - lon_box.dlon, v.lat - box.dlat),
                                    point(v.lon + lon_box.dlon, v.lat + box.dlat))
    CROSS JOIN LATERAL (
        SELECT 2 * 6371008.8 * asin(sqrt(least(1.0,
                   power(sin(radians(p.lat - v.lat) / 2), 2)
                   + cos(radians(v.lat)) * cos(radians(p.lat))
                     * power(sin(radians(p.lon - v.lon) / 2), 2)))) AS distance_m
    ) d
    WHERE p.lat IS NOT NULL AND p.lon IS NOT NULL AND d.distance_m <= p_radius_m
$$;

-- coverage_by_village as in 007; the pairs and the probes' coverage are each computed
-- once and then joined (the planner, estimating a handful of rows from each function,
-- tested every village against every probe: 21 M distance evaluations, 8 s).
CREATE OR REPLACE FUNCTION coverage_by_village(p_start timestamptz, p_end timestamptz,
                                               p_radius_m double precision DEFAULT 3000,
                                               p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint, operator text, availability_pct double precision,
               level integer, coverage_class text, probes bigint, readings bigint)
LANGUAGE sql STABLE
SET jit = off
AS $$
    WITH probe_ops AS MATERIALIZED (
        SELECT c.probe_id, c.operator, c.level, c.availability_pct, c.readings
        FROM coverage_by_probe(p_start, p_end) c
        WHERE c.technology = 'all'
    ), pairs AS MATERIALIZED (
        SELECT * FROM coverage_village_pairs(p_radius_m, p_min_distance_m)
    ), combined AS (
        SELECT pr.village_id, po.operator,
               sum(pr.weight * po.availability_pct) / sum(pr.weight) AS availability_pct,
               sum(pr.weight * po.level) / sum(pr.weight) AS mean_level,
               count(*) AS probes,
               sum(po.readings)::bigint AS readings
        FROM pairs pr
        JOIN probe_ops po ON po.probe_id = pr.probe_id
        GROUP BY pr.village_id, po.operator
    )
    SELECT village_id, operator, availability_pct,
           least(3, greatest(0, ceil(mean_level - 0.5 - 1e-9)))::integer,
           coverage_class_name(least(3, greatest(0, ceil(mean_level - 0.5 - 1e-9)))::integer),
           probes, readings
    FROM combined
$$;
