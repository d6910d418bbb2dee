-- coverwatch schema, migration 014: the villages' nearby probes, kept until a position moves.
--
-- Which probes lie within the radius of each village, how far and with what weight
-- depends only on where villages and probes are, yet every map, API answer and Grafana
-- panel computed it again: on the province benchmark (10,000 villages, 2,000 probes,
-- 141 k pairs) the pairs and their per-village arrays were ~0.4 s of the 1 s village
-- status. Here they are kept per (radius, minimum distance) in coverage_nearby_cache,
-- built by coverage_nearby_refresh() and valid while coverage_nearby_built holds a row
-- for them; any change of a village's or a probe's position (insert, delete, a moved
-- lon/lat, truncate) deletes those rows, so a reader never uses pairs of old positions:
-- coverage_village_nearby() reads the cache when it is valid in the reader's snapshot
-- and computes the pairs otherwise (a read-only Grafana user never writes; the figures
-- are the same either way). What no trigger sees — a restore with triggers disabled
-- (pg_restore --disable-triggers, session_replication_role = replica) or an ALTER TABLE
-- that rewrites positions — needs `DELETE FROM coverage_nearby_built` afterwards.

CREATE TABLE coverage_nearby_cache (
    radius_m        double precision NOT NULL,
    min_distance_m  double precision NOT NULL,
    village_id      bigint NOT NULL,
    probe_ids       text[] NOT NULL,
    distances_m     double precision[] NOT NULL,
    weights         double precision[] NOT NULL,
    PRIMARY KEY (radius_m, min_distance_m, village_id)
);
COMMENT ON TABLE coverage_nearby_cache IS
    'per village: the probes within the radius, nearest first (valid only with a '
    'coverage_nearby_built row for the same radius and minimum distance)';

CREATE TABLE coverage_nearby_built (
    radius_m        double precision NOT NULL,
    min_distance_m  double precision NOT NULL,
    built_at        timestamptz NOT NULL DEFAULT now(),
    pairs           bigint NOT NULL,
    PRIMARY KEY (radius_m, min_distance_m)
);

-- The pairs as 010 computes them (its coverage_village_pairs, renamed).
ALTER FUNCTION coverage_village_pairs(double precision, double precision)
    RENAME TO coverage_village_pairs_computed;

CREATE FUNCTION coverage_village_nearby(p_radius_m double precision,
                                        p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint, probe_ids text[], distances_m double precision[],
               weights double precision[])
LANGUAGE sql STABLE ROWS 10000 AS $$
    SELECT c.village_id, c.probe_ids, c.distances_m, c.weights
    FROM coverage_nearby_cache c
    WHERE c.radius_m = p_radius_m AND c.min_distance_m = p_min_distance_m
      AND EXISTS (SELECT FROM coverage_nearby_built b
                  WHERE b.radius_m = p_radius_m AND b.min_distance_m = p_min_distance_m)
    UNION ALL
    SELECT pr.village_id,
           array_agg(pr.probe_id ORDER BY pr.distance_m, pr.probe_id),
           array_agg(pr.distance_m ORDER BY pr.distance_m, pr.probe_id),
           array_agg(pr.weight ORDER BY pr.distance_m, pr.probe_id)
    FROM coverage_village_pairs_computed(p_radius_m, p_min_distance_m) pr
    WHERE NOT EXISTS (SELECT FROM coverage_nearby_built b
                      WHERE b.radius_m = p_radius_m AND b.min_distance_m = p_min_distance_m)
    GROUP BY pr.village_id
$$;
COMMENT ON FUNCTION coverage_village_nearby(double precision, double precision) IS
    'per village with a probe within the radius: those probes, nearest first, their '
    'distances and inverse-square weights (from the cache when it is valid)';

CREATE FUNCTION coverage_village_pairs(p_radius_m double precision,
                                       p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint, probe_id text, distance_m double precision,
               weight double precision)
LANGUAGE sql STABLE ROWS 200000 AS $$
    SELECT n.village_id, p.probe_id, p.distance_m, p.weight
    FROM coverage_village_nearby(p_radius_m, p_min_distance_m) n
    CROSS JOIN LATERAL unnest(n.probe_ids, n.distances_m, n.weights)
        AS p(probe_id, distance_m, weight)
$$;

-- Build the cache for one radius and minimum distance unless it is valid. The lock
-- conflicts with the invalidating triggers' writes, so a position that moves while the
-- cache is built either waits for the build and then invalidates it, or commits first
-- and is seen by it. Returns whether it built.
CREATE FUNCTION coverage_nearby_refresh(p_radius_m double precision,
                                        p_min_distance_m double precision DEFAULT 100)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    stored bigint;
BEGIN
    -- Under REPEATABLE READ or SERIALIZABLE every statement here would read the snapshot
    -- taken before the lock, and could cache positions a mover committed meanwhile: build
    -- only under READ COMMITTED (readers compute the pairs otherwise, as without a cache).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT FROM coverage_nearby_built
               WHERE radius_m = p_radius_m AND min_distance_m = p_min_distance_m) THEN
        RETURN false;
    END IF;
    LOCK TABLE coverage_nearby_built IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT FROM coverage_nearby_built
               WHERE radius_m = p_radius_m AND min_distance_m = p_min_distance_m) THEN
        RETURN false;  -- another session built it while this one waited
    END IF;
    DELETE FROM coverage_nearby_cache
    WHERE radius_m = p_radius_m AND min_distance_m = p_min_distance_m;
    INSERT INTO coverage_nearby_cache
    SELECT p_radius_m, p_min_distance_m, n.*
    FROM coverage_village_nearby(p_radius_m, p_min_distance_m) n;
    GET DIAGNOSTICS stored = ROW_COUNT;
    INSERT INTO coverage_nearby_built (radius_m, min_distance_m, pairs)
    SELECT p_radius_m, p_min_distance_m, coalesce(sum(cardinality(probe_ids)), 0)
    FROM coverage_nearby_cache
    WHERE radius_m = p_radius_m AND min_distance_m = p_min_distance_m;
    -- Radii nobody asked for again are not kept forever: the 8 most recent stay.
    DELETE FROM coverage_nearby_built
    WHERE (radius_m, min_distance_m) NOT IN (
        SELECT radius_m, min_distance_m FROM coverage_nearby_built
        ORDER BY built_at DESC LIMIT 8);
    DELETE FROM coverage_nearby_cache c
    WHERE NOT EXISTS (SELECT FROM coverage_nearby_built b
                      WHERE b.radius_m = c.radius_m AND b.min_distance_m = c.min_distance_m);
    RETURN true;
END
$$;

-- SECURITY DEFINER: a role allowed to add probes or import villages invalidates the cache
-- without being granted writes on it.
CREATE FUNCTION coverage_nearby_invalidate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM coverage_nearby_built;
    RETURN NULL;
END
$$;

CREATE TRIGGER villages_nearby_invalidate
    AFTER INSERT OR DELETE OR TRUNCATE ON villages
    FOR EACH STATEMENT EXECUTE FUNCTION coverage_nearby_invalidate();
CREATE TRIGGER villages_moved_nearby_invalidate
    AFTER UPDATE OF lon, lat, village_id ON villages
    FOR EACH ROW WHEN (OLD.lon IS DISTINCT FROM NEW.lon OR OLD.lat IS DISTINCT FROM NEW.lat
                       OR OLD.village_id IS DISTINCT FROM NEW.village_id)
    EXECUTE FUNCTION coverage_nearby_invalidate();
CREATE TRIGGER probes_nearby_invalidate
    AFTER INSERT OR DELETE OR TRUNCATE ON probes
    FOR EACH STATEMENT EXECUTE FUNCTION coverage_nearby_invalidate();
CREATE TRIGGER probes_moved_nearby_invalidate
    AFTER UPDATE OF lon, lat, probe_id ON probes
    FOR EACH ROW WHEN (OLD.lon IS DISTINCT FROM NEW.lon OR OLD.lat IS DISTINCT FROM NEW.lat
                       OR OLD.probe_id IS DISTINCT FROM NEW.probe_id)
    EXECUTE FUNCTION coverage_nearby_invalidate();

-- 013's rule, reading the nearby probes once (cached or computed) for both its halves.
CREATE OR REPLACE FUNCTION coverage_village_status_of(p_probe_ids text[], p_operators text[],
                                                      p_levels integer[], p_usable bigint[],
                                                      p_readings bigint[],
                                                      p_radius_m double precision DEFAULT 3000,
                                                      p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint,
               nearby_probe_ids text[], nearby_distances_m double precision[],
               nearby_weights double precision[],
               operators text[], availability_pct double precision[], levels integer[],
               coverage_classes text[], probes bigint[], readings bigint[])
LANGUAGE sql STABLE
SET jit = off
SET work_mem = '64MB'
AS $$
    WITH probe_ops AS MATERIALIZED (
        -- availability exactly as coverage_by_probe computes it
        SELECT o.probe_id, o.operator, o.level,
               (100.0 * o.usable / o.readings)::double precision AS availability_pct,
               o.readings
        FROM unnest(p_probe_ids, p_operators, p_levels, p_usable, p_readings)
             AS o(probe_id, operator, level, usable, readings)
        WHERE o.readings > 0
    ), nearby AS MATERIALIZED (
        SELECT * FROM coverage_village_nearby(p_radius_m, p_min_distance_m)
    ), combined AS (
        -- Per operator: the nearby probes' availability and class levels, weighted by
        -- 1 / max(d, min_distance)^2; the class is the weighted mean level rounded half
        -- down (conservative).
        SELECT n.village_id, po.operator,
               sum(pr.weight * po.availability_pct) / sum(pr.weight) AS availability_pct,
               least(3, greatest(0, ceil(sum(pr.weight * po.level) / sum(pr.weight)
                                         - 0.5 - 1e-9)))::integer AS level,
               count(*) AS probes,
               sum(po.readings)::bigint AS readings
        FROM nearby n
        CROSS JOIN LATERAL unnest(n.probe_ids, n.weights) AS pr(probe_id, weight)
        JOIN probe_ops po ON po.probe_id = pr.probe_id
        GROUP BY n.village_id, po.operator
    ), by_village AS (
        SELECT c.village_id,
               array_agg(c.operator ORDER BY c.operator) AS operators,
               array_agg(c.availability_pct ORDER BY c.operator) AS availability_pct,
               array_agg(c.level ORDER BY c.operator) AS levels,
               array_agg(coverage_class_name(c.level) ORDER BY c.operator) AS coverage_classes,
               array_agg(c.probes ORDER BY c.operator) AS probes,
               array_agg(c.readings ORDER BY c.operator) AS readings
        FROM combined c
        GROUP BY c.village_id
    )
    -- Every village with an operator has a nearby probe: nearby holds them all.
    SELECT n.village_id, n.probe_ids, n.distances_m, n.weights,
           coalesce(v.operators, '{}'), coalesce(v.availability_pct, '{}'),
           coalesce(v.levels, '{}'), coalesce(v.coverage_classes, '{}'),
           coalesce(v.probes, '{}'), coalesce(v.readings, '{}')
    FROM nearby n
    LEFT JOIN by_village v ON v.village_id = n.village_id
$$;
