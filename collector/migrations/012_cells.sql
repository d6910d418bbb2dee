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

-- Is a cell on the air? Asked at p_at about every cell that some modem usually saw in the
-- p_history before the last p_window ("its watchers": a probe's modem that listed it in at
-- least half of its cells rounds then):
--
--   on_air      a modem saw it in the window (p_at - p_window, p_at];
--   off_air     no modem saw it in the window, while at least one of its watchers kept
--               measuring there: it listed other cells in the window, or it took signal
--               readings that found no service (the only tower gone) - the tower, or
--               this cell of it, is down: a tower outage, not a power cut;
--   unheard     none of its watchers measured in the window (their probe is silent - a
--               power cut in the village - or that modem failed while another modem of
--               the kit goes on): nothing is said about the tower.
--
-- A watcher is a (probe, modem): in a kit, one modem's readings say nothing about the
-- cells of another modem's operator. A cell is keyed by its cell id where some modem
-- named it (serving cells nearly always; a neighbour's channel and pci are mapped to the
-- id a serving-cell report gave them), else by (operator, technology, channel, pci): a
-- round whose neighbour list failed, sending only the serving cell by its id, still
-- counts as seeing that cell. A neighbour the modem hears only now and then (in fewer
-- than half of its rounds) has no watchers, and is never called off_air.
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
WITH listed AS (
    SELECT c.probe_id, c.modem, c.operator_code, c.technology, c.channel, c.pci, c.cell_id,
           c.taken_at, c.taken_at > p_at - p_window AS in_window
    FROM readings_cell c
    WHERE c.taken_at > p_at - p_window - p_history
      AND c.taken_at <= p_at
),
identities AS (
    -- A cell reported with its id and its channel and pci: the id names that cell.
    SELECT l.operator_code, l.technology, l.channel, l.pci, max(l.cell_id) AS cell_id
    FROM listed l
    WHERE l.cell_id IS NOT NULL AND l.channel IS NOT NULL AND l.pci IS NOT NULL
    GROUP BY l.operator_code, l.technology, l.channel, l.pci
),
sightings AS (
    SELECT l.probe_id, l.modem, l.operator_code, l.technology, l.channel, l.pci,
           l.taken_at, l.in_window,
           coalesce(l.cell_id, i.cell_id) AS known_id
    FROM listed l
    LEFT JOIN identities i
      ON i.operator_code IS NOT DISTINCT FROM l.operator_code
     AND i.technology IS NOT DISTINCT FROM l.technology
     AND i.channel = l.channel AND i.pci = l.pci
    WHERE l.cell_id IS NOT NULL OR i.cell_id IS NOT NULL
       OR (l.channel IS NOT NULL AND l.pci IS NOT NULL)
),
keyed AS (
    SELECT s.*,
           CASE WHEN s.known_id IS NULL THEN s.channel END AS key_channel,
           CASE WHEN s.known_id IS NULL THEN s.pci END AS key_pci
    FROM sightings s
),
rounds AS (
    -- Each modem's cells rounds (one taken_at each) before the window and in it.
    SELECT l.probe_id, l.modem,
           count(DISTINCT l.taken_at) FILTER (WHERE NOT l.in_window) AS before,
           count(DISTINCT l.taken_at) FILTER (WHERE l.in_window) AS now
    FROM listed l
    GROUP BY l.probe_id, l.modem
),
per_watcher AS (
    SELECT k.operator_code, k.technology, k.key_channel, k.key_pci, k.known_id,
           k.probe_id, k.modem,
           count(DISTINCT k.taken_at) FILTER (WHERE NOT k.in_window) AS seen_before,
           bool_or(k.in_window) AS sees_now,
           max(k.taken_at) AS last_seen,
           max(k.channel) AS channel,
           max(k.pci) AS pci
    FROM keyed k
    GROUP BY k.operator_code, k.technology, k.key_channel, k.key_pci, k.known_id,
             k.probe_id, k.modem
),
judged AS (
    SELECT w.*,
           w.seen_before > 0 AND 2 * w.seen_before >= r.before AS watched_before,
           r.now AS rounds_now
    FROM per_watcher w
    JOIN rounds r ON r.probe_id = w.probe_id AND r.modem IS NOT DISTINCT FROM w.modem
),
reporting AS (
    SELECT j.*,
           j.watched_before AND (
               j.rounds_now > 0
               OR EXISTS (
                   SELECT 1 FROM readings_signal r
                   WHERE r.probe_id = j.probe_id
                     AND r.modem IS NOT DISTINCT FROM j.modem
                     AND r.taken_at > p_at - p_window
                     AND r.taken_at <= p_at
                     AND r.registration NOT IN ('home', 'roaming')
               )
           ) AS reporting
    FROM judged j
)
SELECT j.operator_code,
       j.technology,
       max(j.channel) AS channel,
       max(j.pci) AS pci,
       j.known_id AS cell_id,
       count(*) FILTER (WHERE j.watched_before)::integer AS watchers,
       count(*) FILTER (WHERE j.reporting)::integer AS watchers_reporting,
       count(*) FILTER (WHERE j.sees_now)::integer AS watchers_seeing,
       max(j.last_seen) AS last_seen,
       CASE WHEN bool_or(j.sees_now) THEN 'on_air'
            WHEN bool_or(j.reporting) THEN 'off_air'
            ELSE 'unheard' END AS presence
FROM reporting j
GROUP BY j.operator_code, j.technology, j.key_channel, j.key_pci, j.known_id
HAVING bool_or(j.watched_before)
$$;
COMMENT ON FUNCTION cell_presence(timestamptz, interval, interval) IS
    'each cell some modem usually saw in p_history before the last p_window: on_air, off_air '
    '(tower outage: its watchers kept measuring without seeing it) or unheard (its watchers '
    'are silent)';
