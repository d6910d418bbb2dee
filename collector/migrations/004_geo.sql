-- coverwatch schema, migration 004: village registry and administrative boundaries (geo).
-- No PostGIS: geometry is stored as GeoJSON (jsonb, WGS 84 lon/lat) and turned into
-- shapely geometry by geo/; a bounding box beside each boundary lets queries pick the
-- few polygons that matter without parsing them all.

CREATE TABLE villages (
    village_id  bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (name <> ''),
    commune     text NOT NULL DEFAULT '',
    district    text NOT NULL DEFAULT '',
    province    text NOT NULL DEFAULT '',
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    area        jsonb CHECK (area IS NULL OR jsonb_typeof(area) = 'object'),
    population  integer CHECK (population >= 0),
    households  integer CHECK (households >= 0),
    grid_power  text NOT NULL DEFAULT 'unknown' CHECK (grid_power IN ('yes', 'no', 'unknown')),
    source      text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (province, district, commune, name)
);
COMMENT ON COLUMN villages.area IS 'optional village polygon as a GeoJSON geometry (lon/lat)';
COMMENT ON COLUMN villages.grid_power IS 'is the village on the electricity grid: yes, no, unknown';

CREATE TABLE boundaries (
    boundary_id bigserial PRIMARY KEY,
    level       text NOT NULL CHECK (level IN ('province', 'district', 'commune')),
    name        text NOT NULL CHECK (name <> ''),
    parent      text NOT NULL DEFAULT '',
    geometry    jsonb NOT NULL CHECK (jsonb_typeof(geometry) = 'object'),
    min_lon     double precision NOT NULL,
    min_lat     double precision NOT NULL,
    max_lon     double precision NOT NULL,
    max_lat     double precision NOT NULL,
    source      text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (level, parent, name)
);
COMMENT ON COLUMN boundaries.parent IS 'name of the enclosing unit (a commune''s district), or empty';

-- Coverage queries read one time window of every probe's signal readings.
CREATE INDEX readings_signal_probe_taken_at ON readings_signal (probe_id, taken_at);
CREATE INDEX readings_latency_probe_taken_at ON readings_latency (probe_id, taken_at);
