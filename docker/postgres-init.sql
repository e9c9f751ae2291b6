-- The MLflow tracking server's database, next to Optuna's (POSTGRES_DB=optuna).
CREATE DATABASE mlflow;
