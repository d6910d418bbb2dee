-- coverwatch schema, migration 006: the ledger of committed readings.
--
-- A reading is identified by (probe_id, outbox_id, seq), whatever its taken_at: a probe
-- that corrects its clock after NTP sync may send a reading again with another
-- taken_at, and the readings tables' unique key (probe_id, seq, taken_at) - which must
-- contain the time column on TimescaleDB hypertables - would store it twice. The ledger
-- holds, per probe and outbox, the seq ranges committed so far (stored, or kept as dead
-- letters); the collector consults and extends it in the same transaction as the rows,
-- under a row lock, and acknowledges exactly these ranges to the probe. A probe whose
-- outbox was lost starts seq again under a new outbox_id, hence a new ledger row.
-- It is a plain table on both storage layouts.
CREATE TABLE reading_ledger (
    probe_id   text NOT NULL,
    outbox_id  uuid NOT NULL,
    committed  int8multirange NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (probe_id, outbox_id)
);
COMMENT ON TABLE reading_ledger IS
    'seq ranges of each probe outbox committed to the readings tables or dead letters';

-- Batches without an outbox id (probes older than the ledger) are not kept here: under
-- the nil id a probe whose old outbox restarted seq at 1 could not be told from a
-- re-send, so they keep the readings tables' key (probe_id, seq, taken_at). A probe of
-- this version gives an outbox it finds without an id a new random one.
