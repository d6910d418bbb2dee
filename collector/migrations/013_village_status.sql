-- A village's whole coverage status in one row, computed in one pass.
--
-- geo asked twice: once for each village's nearby probes (coverage_village_pairs) and
-- once for its per-operator status (coverage_by_village, which computed the pairs and
-- every probe's coverage again inside). On the province benchmark (10,000 villages,
-- 2,000 probes, 141 k pairs) that was two passes over the pairs and 165 k rows to fetch.
-- coverage_village_status computes the probes' coverage and the pairs once and returns
-- one row per village that has a probe within the radius, the nearby probes and the
-- operators as arrays. coverage_by_village (what Grafana reads) is now its operators
-- unnested, so the map, the API and the panels still share one definition.
--
-- The rule itself is coverage_village_status_of: it takes every probe's 'all' row of
-- coverage_by_probe (probe, operator, level, usable and all readings) as arrays, so that
-- geo, which has just read coverage_by_probe for the probes' own classes, hands them in
-- instead of having them computed a second time; coverage_village_status feeds it from
-- coverage_by_probe itself.

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
-- The sorts of a province's 141 k pairs spilled to disk at the default 4 MB (~100 ms each).
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
    ), pairs AS MATERIALIZED (
        SELECT * FROM coverage_village_pairs(p_radius_m, p_min_distance_m)
    ), combined AS (
        -- Per operator: the nearby probes' availability and class levels, weighted by
        -- 1 / max(d, min_distance)^2; the class is the weighted mean level rounded half
        -- down (conservative).
        SELECT pr.village_id, po.operator,
               sum(pr.weight * po.availability_pct) / sum(pr.weight) AS availability_pct,
               least(3, greatest(0, ceil(sum(pr.weight * po.level) / sum(pr.weight)
                                         - 0.5 - 1e-9)))::integer AS level,
               count(*) AS probes,
               sum(po.readings)::bigint AS readings
        FROM pairs pr
        JOIN probe_ops po ON po.probe_id = pr.probe_id
        GROUP BY pr.village_id, po.operator
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
    ), nearby AS (
        SELECT pr.village_id,
               array_agg(pr.probe_id ORDER BY pr.distance_m, pr.probe_id) AS probe_ids,
               array_agg(pr.distance_m ORDER BY pr.distance_m, pr.probe_id) AS distances_m,
               array_agg(pr.weight ORDER BY pr.distance_m, pr.probe_id) AS weights
        FROM pairs pr
        GROUP BY pr.village_id
    )
    -- Every village with an operator has a nearby probe: nearby holds them all.
    SELECT n.village_id, n.probe_ids, n.distances_m, n.weights,
           coalesce(v.operators, '{}'), coalesce(v.availability_pct, '{}'),
           coalesce(v.levels, '{}'), coalesce(v.coverage_classes, '{}'),
           coalesce(v.probes, '{}'), coalesce(v.readings, '{}')
    FROM nearby n
    LEFT JOIN by_village v ON v.village_id = n.village_id
$$;

CREATE OR REPLACE FUNCTION coverage_village_status(p_start timestamptz, p_end timestamptz,
                                                   p_radius_m double precision DEFAULT 3000,
                                                   p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint,
               nearby_probe_ids text[], nearby_distances_m double precision[],
               nearby_weights double precision[],
               operators text[], availability_pct double precision[], levels integer[],
               coverage_classes text[], probes bigint[], readings bigint[])
LANGUAGE sql STABLE
SET jit = off
AS $$
    SELECT s.*
    FROM (
        SELECT array_agg(c.probe_id) AS probe_ids, array_agg(c.operator) AS operators,
               array_agg(c.level) AS levels, array_agg(c.usable_readings) AS usable,
               array_agg(c.readings) AS readings
        FROM coverage_by_probe(p_start, p_end) c
        WHERE c.technology = 'all'
    ) a
    CROSS JOIN LATERAL coverage_village_status_of(a.probe_ids, a.operators, a.levels, a.usable,
                                                  a.readings, p_radius_m, p_min_distance_m) s
$$;

CREATE OR REPLACE FUNCTION coverage_by_village(p_start timestamptz, p_end timestamptz,
                                               p_radius_m double precision DEFAULT 3000,
                                               p_min_distance_m double precision DEFAULT 100)
RETURNS TABLE (village_id bigint, operator text, availability_pct double precision,
               level integer, coverage_class text, probes bigint, readings bigint)
LANGUAGE sql STABLE
SET jit = off
AS $$
    SELECT s.village_id, o.operator, o.availability_pct, o.level, o.coverage_class,
           o.probes, o.readings
    FROM coverage_village_status(p_start, p_end, p_radius_m, p_min_distance_m) s
    CROSS JOIN LATERAL unnest(s.operators, s.availability_pct, s.levels, s.coverage_classes,
                              s.probes, s.readings)
        AS o(operator, availability_pct, level, coverage_class, probes, readings)
$$;
