-- coverwatch schema, migration 011: operator scans.
--
-- A scan lists every network a modem can hear (AT+COPS=?, Quectel AT+QSCAN, mmcli
-- --3gpp-scan), so a probe with one SIM also sees the other operators. Columns follow
-- coverwatch.protocol.OperatorScanReading; the key is that of every readings_ table.
-- On TimescaleDB, 011_operator_scan_timescale_extra.sql then makes it a hypertable.
CREATE TABLE readings_operator_scan (
    probe_id        text NOT NULL,
    seq             bigint NOT NULL,
    boot_id         uuid NOT NULL,
    taken_at        timestamptz NOT NULL,
    monotonic_ms    bigint NOT NULL,
    ntp_synced      boolean NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    scan_started_at timestamptz NOT NULL,
    scan_method     text NOT NULL,
    networks_found  integer NOT NULL,
    operator_code   text,
    operator_name   text,
    technology      text,
    status          text,
    cell_id         bigint,
    tac             integer,
    rsrp_dbm        real,
    rsrq_db         real,
    rssi_dbm        real,
    modem           text,
    PRIMARY KEY (probe_id, seq, taken_at)
);
COMMENT ON TABLE readings_operator_scan IS
    'operators a modem''s network scan heard: one row per operator and technology of a scan '
    '(scan_started_at groups them); a scan that heard nothing is one row with networks_found 0';
COMMENT ON COLUMN readings_operator_scan.status IS
    '27.007 <stat>: available, current (the network the modem is on), forbidden, unknown';
-- geo reads the recent scans of the probes near a village.
CREATE INDEX readings_operator_scan_recent ON readings_operator_scan (probe_id, taken_at DESC);
