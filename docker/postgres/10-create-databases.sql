-- Run once by the postgres image's entrypoint, on the first start of an empty data volume (as POSTGRES_USER,
-- connected to POSTGRES_DB, the market store `trading`, which the entrypoint has created already).
-- The other two databases of the deployment, owned by the same user:
--   dagster  Dagster's run, event-log and schedule storage (DAGSTER_PG_DB in docker/compose.yaml)
--   mlflow   the MLflow tracking server's backend store (experiments, runs, model registry)
-- With the TimescaleDB image (TP_POSTGRES_IMAGE=timescale/timescaledb:...-pg16) its own init scripts run
-- beside this one (this file is mounted alone, not over the whole /docker-entrypoint-initdb.d).
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
