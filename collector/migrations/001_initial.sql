-- coverwatch schema, migration 001: probe registry, readings per kind, status, dead letters.
-- Plain PostgreSQL; when TimescaleDB is available, timescale.sql is applied on top.
-- Column names follow coverwatch.protocol field names (units in names); tests check it.

CREATE TABLE probes (
    probe_id          text PRIMARY KEY CHECK (probe_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name              text,
    village           text,
    lon               double precision CHECK (lon BETWEEN -180 AND 180),
    lat               double precision CHECK (lat BETWEEN -90 AND 90),
    operator          text,
    sim_iccid         text,
    hardware          text,
    installed_at      timestamptz,
    report_interval_s integer NOT NULL DEFAULT 300 CHECK (report_interval_s > 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN probes.report_interval_s IS
    'expected cadence of readings; a probe silent for 3 intervals is stale';

-- Every readings table starts with the fields every reading carries. The unique key
-- (probe_id, seq, taken_at) makes redelivery idempotent; taken_at is part of it because
-- TimescaleDB needs the partitioning column in every unique index.
CREATE TABLE readings_signal (
    probe_id           text NOT NULL,
    seq                bigint NOT NULL,
    boot_id            uuid NOT NULL,
    taken_at           timestamptz NOT NULL,
    monotonic_ms       bigint NOT NULL,
    ntp_synced         boolean NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now(),
    registration       text NOT NULL,
    technology         text,
    operator_code      text,
    operator_name      text,
    cell_id            bigint,
    tac                integer,
    rsrp_dbm           real,
    rsrq_db            real,
    sinr_db            real,
    rssi_dbm           real,
    rscp_dbm           real,
    ecio_db            real,
    signal_quality_pct real,
    PRIMARY KEY (probe_id, seq, taken_at)
);

CREATE TABLE readings_latency (
    probe_id         text NOT NULL,
    seq              bigint NOT NULL,
    boot_id          uuid NOT NULL,
    taken_at         timestamptz NOT NULL,
    monotonic_ms     bigint NOT NULL,
    ntp_synced       boolean NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    target           text NOT NULL,
    method           text NOT NULL,
    packets_sent     integer NOT NULL,
    packets_received integer NOT NULL,
    loss_pct         real NOT NULL,
    rtt_min_ms       real,
    rtt_avg_ms       real,
    rtt_median_ms    real,
    rtt_max_ms       real,
    jitter_ms        real,
    dns_ms           real,
    PRIMARY KEY (probe_id, seq, taken_at)
);

CREATE TABLE readings_power (
    probe_id                text NOT NULL,
    seq                     bigint NOT NULL,
    boot_id                 uuid NOT NULL,
    taken_at                timestamptz NOT NULL,
    monotonic_ms            bigint NOT NULL,
    ntp_synced              boolean NOT NULL,
    received_at             timestamptz NOT NULL DEFAULT now(),
    uptime_s                double precision NOT NULL,
    undervoltage_now        boolean,
    undervoltage_since_boot boolean,
    on_mains                boolean,
    battery_pct             real,
    battery_charging        boolean,
    PRIMARY KEY (probe_id, seq, taken_at)
);

CREATE TABLE readings_outage (
    probe_id          text NOT NULL,
    seq               bigint NOT NULL,
    boot_id           uuid NOT NULL,
    taken_at          timestamptz NOT NULL,
    monotonic_ms      bigint NOT NULL,
    ntp_synced        boolean NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    previous_boot_id  uuid NOT NULL,
    outage_started_at timestamptz NOT NULL,
    outage_ended_at   timestamptz NOT NULL,
    outage_duration_s double precision NOT NULL,
    PRIMARY KEY (probe_id, seq, taken_at)
);

CREATE TABLE readings_throughput (
    probe_id       text NOT NULL,
    seq            bigint NOT NULL,
    boot_id        uuid NOT NULL,
    taken_at       timestamptz NOT NULL,
    monotonic_ms   bigint NOT NULL,
    ntp_synced     boolean NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    download_bps   double precision,
    upload_bps     double precision,
    ping_ms        real,
    server_name    text,
    bytes_used     bigint,
    skipped_reason text,
    PRIMARY KEY (probe_id, seq, taken_at)
);

CREATE TABLE readings_system (
    probe_id             text NOT NULL,
    seq                  bigint NOT NULL,
    boot_id              uuid NOT NULL,
    taken_at             timestamptz NOT NULL,
    monotonic_ms         bigint NOT NULL,
    ntp_synced           boolean NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    cpu_temp_c           real,
    load_1m              real,
    memory_used_pct      real,
    disk_free_bytes      bigint,
    outbox_pending       bigint,
    outbox_dropped_total bigint,
    PRIMARY KEY (probe_id, seq, taken_at)
);

CREATE TABLE readings_sensor_error (
    probe_id     text NOT NULL,
    seq          bigint NOT NULL,
    boot_id      uuid NOT NULL,
    taken_at     timestamptz NOT NULL,
    monotonic_ms bigint NOT NULL,
    ntp_synced   boolean NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    sensor       text NOT NULL,
    error        text NOT NULL,
    PRIMARY KEY (probe_id, seq, taken_at)
);

-- Messages or readings that failed validation or a permanent database error, kept with
-- their raw bytes (the first 64 KiB) so nothing is silently lost.
CREATE TABLE dead_letters (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    topic         text NOT NULL,
    probe_id      text,
    reading_index integer,
    reason        text NOT NULL,
    field         text,
    payload       bytea NOT NULL,
    payload_bytes integer NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters USING brin (received_at);
CREATE INDEX dead_letters_probe ON dead_letters (probe_id, received_at);

-- The latest known state of every probe that ever spoke, registered or not.
CREATE TABLE probe_status (
    probe_id         text PRIMARY KEY,
    state            text NOT NULL DEFAULT 'unknown' CHECK (state IN ('online', 'offline', 'unknown')),
    state_changed_at timestamptz,
    last_seen        timestamptz,
    last_taken_at    timestamptz,
    boot_id          uuid,
    agent_version    text
);

CREATE TABLE probe_events (
    id       bigserial PRIMARY KEY,
    probe_id text NOT NULL,
    at       timestamptz NOT NULL,
    event    text NOT NULL CHECK (event IN ('online', 'offline', 'reboot')),
    detail   jsonb NOT NULL DEFAULT '{}'
);
-- Unique so that a redelivered status message records its event once.
CREATE UNIQUE INDEX probe_events_once ON probe_events (probe_id, at, event);

-- Probe status as geo and dashboards read it: stale after 3 silent report intervals.
CREATE VIEW probe_health AS
SELECT s.probe_id,
       p.village,
       p.lon,
       p.lat,
       s.state,
       s.state_changed_at,
       s.last_seen,
       s.last_taken_at,
       s.boot_id,
       s.agent_version,
       coalesce(p.report_interval_s, 300) AS report_interval_s,
       (s.last_seen IS NULL
        OR s.last_seen < now() - make_interval(secs => 3 * coalesce(p.report_interval_s, 300)))
           AS stale,
       (p.probe_id IS NOT NULL) AS registered
FROM probe_status s
LEFT JOIN probes p USING (probe_id);

CREATE VIEW power_outages AS
SELECT probe_id, previous_boot_id, boot_id, outage_started_at, outage_ended_at,
       outage_duration_s
FROM readings_outage;
