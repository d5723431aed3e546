#!/bin/sh
# Run once by the postgres image's entrypoint when it initialises an empty data directory: the second
# database, for MLflow's basic-auth app (users and permissions), owned by POSTGRES_USER like "mlflow".
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c 'CREATE DATABASE mlflow_auth'
