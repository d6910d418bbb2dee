-- coverwatch schema, migration 015: the tower registry and the operators' coverage claims.
--
-- Evidence that is not a measurement. The tower registry holds cells as OpenCelliD and
-- Mozilla Location Service export them (one row per cell: radio, MCC, MNC, area, cell id,
-- estimated position and range); the claims hold the service areas operators publish per
-- technology (QCVN 81 Annex B maps) as GeoJSON polygons. geo/towers.py and geo/claims.py
-- import them; neither is ever shown as measured coverage.

CREATE TABLE tower_cells (
    technology          text NOT NULL CHECK (technology IN ('gsm', 'umts', 'lte', 'nr5g')),
    mcc                 integer NOT NULL CHECK (mcc BETWEEN 0 AND 999),
    mnc                 integer NOT NULL CHECK (mnc BETWEEN 0 AND 999),
    area                integer NOT NULL CHECK (area >= 0),
    cell                bigint NOT NULL CHECK (cell >= 0),
    pci                 integer CHECK (pci >= 0),
    lon                 double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    lat                 double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    range_m             integer CHECK (range_m >= 0),
    samples             integer CHECK (samples >= 0),
    changeable          boolean,
    created_at          timestamptz,
    updated_at          timestamptz,
    average_signal_dbm  real,
    site                text NOT NULL,
    source              text NOT NULL DEFAULT '',
    imported_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (technology, mcc, mnc, area, cell)
);
COMMENT ON TABLE tower_cells IS
    'cells from a tower registry (OpenCelliD / MLS CSV layout); positions are estimates';
COMMENT ON COLUMN tower_cells.area IS 'LAC (gsm, umts) or TAC (lte, nr5g)';
COMMENT ON COLUMN tower_cells.cell IS
    'CI (gsm), UTRAN cell id RNC*65536+CI (umts), ECI eNB*256+cell (lte), NCI (nr5g)';
COMMENT ON COLUMN tower_cells.changeable IS
    'OpenCelliD: true when the position was computed from samples, false when exact';
COMMENT ON COLUMN tower_cells.site IS
    'the tower a cell belongs to: lte cells of one eNB (ECI / 256) share a site; a cell '
    'of another technology is a site of its own (the registry does not say which share a mast)';
-- Readings name a cell by (network, area, cell id) without the technology family's
-- prefix; this index serves that lookup.
CREATE INDEX tower_cells_network_cell ON tower_cells (mcc, mnc, cell);

-- One row per site: where it is (the mean of its cells' estimated positions), which
-- technologies it carries and how far its cells are said to reach.
CREATE VIEW tower_sites AS
SELECT mcc, mnc, site,
       avg(lon) AS lon, avg(lat) AS lat,
       array_agg(DISTINCT technology ORDER BY technology) AS technologies,
       count(*) AS cells,
       max(range_m) AS max_range_m,
       sum(samples) AS samples
FROM tower_cells
GROUP BY mcc, mnc, site;

CREATE TABLE operator_claims (
    claim_id       bigserial PRIMARY KEY,
    operator_code  text NOT NULL CHECK (operator_code ~ '^[0-9]{5,6}$'),
    technology     text NOT NULL CHECK (technology IN ('gsm', 'umts', 'lte', 'nr5g')),
    name           text NOT NULL DEFAULT '',
    geometry       jsonb NOT NULL CHECK (jsonb_typeof(geometry) = 'object'),
    min_lon        double precision NOT NULL,
    min_lat        double precision NOT NULL,
    max_lon        double precision NOT NULL,
    max_lat        double precision NOT NULL,
    source         text NOT NULL DEFAULT '',
    imported_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE operator_claims IS
    'service areas an operator claims per technology (GeoJSON polygons, lon/lat); '
    'a claim, never a measurement';
CREATE INDEX operator_claims_operator ON operator_claims (operator_code, technology);

-- Which registered cell served each probe's signal readings in a window: the readings
-- name their serving cell by network (operator_code = MCC || MNC), area (tac) and cell id;
-- a registry cell matches on all of them and on the technology — or, for a reading on
-- 5G NSA (EN-DC: technology nr5g, the cell and TAC of its LTE anchor), on the LTE cell.
-- Cells the registry does not know come back with site NULL, so that its gaps show;
-- readings that name no cell are not listed.
CREATE FUNCTION signal_tower_links(window_start timestamptz, window_end timestamptz)
RETURNS TABLE (
    probe_id       text,
    modem          text,
    operator_code  text,
    technology     text,
    tac            integer,
    cell_id        bigint,
    readings       bigint,
    first_seen     timestamptz,
    last_seen      timestamptz,
    site           text,
    site_lon       double precision,
    site_lat       double precision,
    range_m        integer
)
LANGUAGE sql STABLE AS $$
    WITH served AS (
        SELECT r.probe_id, r.modem, r.operator_code, r.technology, r.tac, r.cell_id,
               count(*) AS readings, min(r.taken_at) AS first_seen,
               max(r.taken_at) AS last_seen
        FROM readings_signal r
        WHERE r.taken_at >= window_start AND r.taken_at < window_end
          AND r.cell_id IS NOT NULL AND r.operator_code ~ '^[0-9]{5,6}$'
        GROUP BY 1, 2, 3, 4, 5, 6
    )
    SELECT s.probe_id, s.modem, s.operator_code, s.technology, s.tac, s.cell_id,
           s.readings, s.first_seen, s.last_seen, t.site, t.lon, t.lat, t.range_m
    FROM served s
    LEFT JOIN LATERAL (
        SELECT c.site, c.lon, c.lat, c.range_m
        FROM tower_cells c
        WHERE c.mcc = substr(s.operator_code, 1, 3)::integer
          AND c.mnc = substr(s.operator_code, 4)::integer
          AND c.cell = s.cell_id
          AND c.area = s.tac
          AND c.technology IN (s.technology, CASE WHEN s.technology = 'nr5g' THEN 'lte' END)
        ORDER BY c.technology = s.technology DESC
        LIMIT 1
    ) t ON true
$$;
COMMENT ON FUNCTION signal_tower_links(timestamptz, timestamptz) IS
    'per probe, modem and serving cell in the window: readings and the registry site, if known';
