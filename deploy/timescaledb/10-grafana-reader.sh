#!/bin/sh
# Runs once, when the database volume is first created (docker-entrypoint-initdb.d):
# a read-only role for Grafana, so a dashboard can never change data. pg_read_all_data
# (PostgreSQL 14+) covers tables created later by `coverwatch db upgrade`.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader_password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT pg_read_all_data TO grafana_reader;
ALTER ROLE grafana_reader SET statement_timeout = '60s';
SQL
