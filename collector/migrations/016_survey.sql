-- coverwatch schema, migration 016: survey points, measurements taken on the move.
--
-- Field teams walk or drive villages with a phone app (Tower Collector, or any app whose
-- log is mapped to coverwatch's survey CSV) and import the log: each point has a time, a
-- position and its accuracy, the network, technology, cell and signal the phone saw, or
-- that it saw no service. Survey points are evidence of their own kind, never mixed with a
-- fixed probe's readings (readings_signal): geo shows them as "measured by a survey".

CREATE TABLE survey_points (
    point_id       bigserial PRIMARY KEY,
    survey         text NOT NULL CHECK (survey <> ''),
    source_format  text NOT NULL CHECK (source_format IN ('towercollector', 'coverwatch')),
    device         text NOT NULL DEFAULT '',
    taken_at       timestamptz NOT NULL,
    lon            double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    lat            double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    accuracy_m     real CHECK (accuracy_m >= 0),
    service        text NOT NULL CHECK (service IN ('serving', 'neighbour', 'none')),
    operator_code  text CHECK (operator_code ~ '^[0-9]{5,6}$'),
    technology     text CHECK (technology IN ('gsm', 'umts', 'lte', 'nr5g')),
    cell_id        bigint CHECK (cell_id >= 0),
    tac            integer CHECK (tac >= 0),
    pci            integer CHECK (pci >= 0),
    rsrp_dbm       real,
    rsrq_db        real,
    sinr_db        real,
    rssi_dbm       real,
    rscp_dbm       real,
    imported_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE survey_points IS
    'walk/drive-test points from field surveys (imported logs); evidence apart from probes';
COMMENT ON COLUMN survey_points.survey IS 'the log a point came from (its file name)';
COMMENT ON COLUMN survey_points.service IS
    'serving: the cell the phone used; neighbour: a cell it heard; none: no service there';
-- A log imported twice (or overlapping logs of one device) stores each point once.
CREATE UNIQUE INDEX survey_points_identity ON survey_points
    (device, taken_at, service, operator_code, technology, cell_id, tac, pci, lon, lat,
     rsrp_dbm, rscp_dbm, rssi_dbm)
    NULLS NOT DISTINCT;
CREATE INDEX survey_points_position ON survey_points USING gist (point(lon, lat));
CREATE INDEX survey_points_taken_at ON survey_points (taken_at);
