"""Where results live: the URLs (`urls`), their checks (`checks`), the Optuna storage
(`optuna_storage`, `heartbeats`), and MLflow (`tracking`, `startup`): the one stage that
imports MLflow."""
