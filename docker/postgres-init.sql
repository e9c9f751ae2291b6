-- The MLflow tracking server's database, and its basic-auth app's users, next to Optuna's
-- (POSTGRES_DB=optuna).
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
