-- coverwatch schema, migration 012: cells, the serving and neighbour cells each modem saw.
--
-- A probe's cellular sensor reads the cells its modem sees every cells_interval_minutes
-- (15 by default): one "cell" reading per cell, so one row here per cell per round. A
-- cell is known on the air by its technology, channel (EARFCN / NR-ARFCN / UARFCN /
-- ARFCN) and pci (PCI / PSC / BSIC), which every modem reports for its neighbours too;
-- the cell id (and TAC/LAC) only where the modem names them, mostly for the serving
-- cell. Same key and common columns as every readings_<kind> table (migration 001).
CREATE TABLE readings_cell (
    probe_id      text NOT NULL,
    seq           bigint NOT NULL,
    boot_id       uuid NOT NULL,
    taken_at      timestamptz NOT NULL,
    monotonic_ms  bigint NOT NULL,
    ntp_synced    boolean NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    serving       boolean NOT NULL,
    technology    text,
    operator_code text,
    cell_id       bigint,
    tac           integer,
    pci           integer,
    channel       integer,
    rsrp_dbm      real,
    rsrq_db       real,
    sinr_db       real,
    rssi_dbm      real,
    rscp_dbm      real,
    ecio_db       real,
    modem         text,
    PRIMARY KEY (probe_id, seq, taken_at)
);
COMMENT ON TABLE readings_cell IS
    'serving and neighbour cells each modem saw, one row per cell per cells round';
COMMENT ON COLUMN readings_cell.pci IS
    'physical cell id: LTE/NR PCI, UMTS primary scrambling code or GSM BSIC';
COMMENT ON COLUMN readings_cell.channel IS
    'EARFCN (lte), NR-ARFCN (nr5g), UARFCN (umts) or ARFCN (gsm)';

-- Who saw a cell lately: a time range over every probe (cell_presence), and one probe's
-- cells in time order.
CREATE INDEX readings_cell_on_air ON readings_cell (taken_at, operator_code, technology, channel, pci);
CREATE INDEX readings_cell_probe_taken_at ON readings_cell (probe_id, taken_at);

-- Is a cell on the air? Asked at p_at about every cell some probe saw in the p_history
-- before the last p_window ("its watchers"):
--
--   on_air      a probe saw it in the window (p_at - p_window, p_at];
--   off_air     no probe saw it in the window, while at least one of its watchers kept
--               measuring (took signal readings in the window): the tower, or this cell
--               of it, is down - a tower outage, not a power cut;
--   unheard     none of its watchers took a reading in the window: the probes are silent
--               (a power cut in the village, or their own trouble) and say nothing about
--               the tower.
--
-- A cell is keyed by (operator, technology, channel, pci) when the modem gave the channel
-- and pci (LTE/NR/UMTS cells nearly always), else by (operator, technology, cell id).
-- The window must be longer than the probes' cells interval (15 min by default), and a
-- probe without service sends its readings later from its outbox: ask again about a
-- recent window once the late readings are in.
CREATE FUNCTION cell_presence(
    p_at timestamptz,
    p_window interval DEFAULT INTERVAL '1 hour',
    p_history interval DEFAULT INTERVAL '7 days'
)
RETURNS TABLE (
    operator_code      text,
    technology         text,
    channel            integer,
    pci                integer,
    cell_id            bigint,
    watchers           integer,
    watchers_reporting integer,
    watchers_seeing    integer,
    last_seen          timestamptz,
    presence           text
)
LANGUAGE sql STABLE AS $$
WITH sightings AS (
    SELECT c.probe_id,
           c.operator_code,
           c.technology,
           c.channel,
           c.pci,
           CASE WHEN c.channel IS NULL OR c.pci IS NULL THEN c.cell_id END AS key_cell_id,
           c.cell_id,
           c.taken_at,
           c.taken_at > p_at - p_window AS in_window
    FROM readings_cell c
    WHERE c.taken_at > p_at - p_window - p_history
      AND c.taken_at <= p_at
      AND ((c.channel IS NOT NULL AND c.pci IS NOT NULL) OR c.cell_id IS NOT NULL)
),
per_probe AS (
    SELECT s.operator_code, s.technology, s.channel, s.pci, s.key_cell_id, s.probe_id,
           bool_or(NOT s.in_window) AS watched_before,
           bool_or(s.in_window) AS sees_now,
           max(s.taken_at) AS last_seen,
           max(s.cell_id) AS cell_id
    FROM sightings s
    GROUP BY s.operator_code, s.technology, s.channel, s.pci, s.key_cell_id, s.probe_id
),
judged AS (
    SELECT p.*,
           p.watched_before AND EXISTS (
               SELECT 1 FROM readings_signal r
               WHERE r.probe_id = p.probe_id
                 AND r.taken_at > p_at - p_window
                 AND r.taken_at <= p_at
           ) AS reporting
    FROM per_probe p
)
SELECT j.operator_code,
       j.technology,
       j.channel,
       j.pci,
       max(j.cell_id) AS cell_id,
       count(*) FILTER (WHERE j.watched_before)::integer AS watchers,
       count(*) FILTER (WHERE j.reporting)::integer AS watchers_reporting,
       count(*) FILTER (WHERE j.sees_now)::integer AS watchers_seeing,
       max(j.last_seen) AS last_seen,
       CASE WHEN bool_or(j.sees_now) THEN 'on_air'
            WHEN bool_or(j.reporting) THEN 'off_air'
            ELSE 'unheard' END AS presence
FROM judged j
GROUP BY j.operator_code, j.technology, j.channel, j.pci, j.key_cell_id
HAVING bool_or(j.watched_before)
$$;
COMMENT ON FUNCTION cell_presence(timestamptz, interval, interval) IS
    'each cell seen in p_history before the last p_window: on_air, off_air (tower outage: '
    'its watchers kept measuring without seeing it) or unheard (its watchers are silent)';

-- TimescaleDB: a hypertable like readings_signal (migration 002), compressed after 30
-- days; kept 2 years, as the other raw readings that are not the coverage record.
SELECT create_hypertable('readings_cell', by_range('taken_at', INTERVAL '7 days'));
ALTER TABLE readings_cell SET (timescaledb.compress, timescaledb.compress_segmentby = 'probe_id',
                               timescaledb.compress_orderby = 'taken_at DESC, seq DESC');
SELECT add_compression_policy('readings_cell', INTERVAL '30 days');
SELECT add_retention_policy('readings_cell', INTERVAL '2 years');
