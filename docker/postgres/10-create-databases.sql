-- Run once by the postgres image's entrypoint, on the first start of an empty data volume (as POSTGRES_USER,
-- connected to POSTGRES_DB, the market store `trading`, which the entrypoint has created already).
-- The roles (NOLOGIN: `tp db migrate`, the migrate service, lets each log in once its password is given):
--   tp_owner     owns the market store's schema (migration 24 gives it every object)
--   tp_platform  the code server, the runs, the live runner, the workers, the api: rows and functions of the
--                market store, and Dagster's storage, whose database it owns (Dagster creates its own tables)
--   tp_mlflow    the MLflow server: owns the mlflow database, and nothing else
-- The other two databases of the deployment:
--   dagster  Dagster's run, event-log and schedule storage (DAGSTER_PG_DB in docker/compose.yaml)
--   mlflow   the MLflow tracking server's backend store (experiments, runs, model registry)
-- With the TimescaleDB image (TP_POSTGRES_IMAGE=timescale/timescaledb:...-pg16) its own init scripts run
-- beside this one (this file is mounted alone, not over the whole /docker-entrypoint-initdb.d).
CREATE ROLE tp_owner NOLOGIN;
CREATE ROLE tp_platform NOLOGIN;
CREATE ROLE tp_mlflow NOLOGIN;
CREATE DATABASE dagster OWNER tp_platform;
CREATE DATABASE mlflow OWNER tp_mlflow;
-- nobody else may connect to those two (PUBLIC has CONNECT on a new database by default)
REVOKE CONNECT ON DATABASE dagster FROM PUBLIC;
REVOKE CONNECT ON DATABASE mlflow FROM PUBLIC;
