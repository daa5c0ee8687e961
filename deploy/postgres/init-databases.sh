#!/bin/bash
# Creates one database per raftloop service (RAFTLOOP_DATABASES), owned by POSTGRES_USER.
# The postgres image runs this once, on the first start with an empty data volume.
set -euo pipefail
for db in ${RAFTLOOP_DATABASES:-hitl ingest judge trainer}; do
    echo "creating database ${db}"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -c "CREATE DATABASE \"${db}\" OWNER \"${POSTGRES_USER}\";"
done
