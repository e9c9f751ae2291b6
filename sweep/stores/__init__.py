"""Where results live: the URLs (`urls`), their checks (`checks`), the Optuna storage
(`optuna_storage`, `heartbeats`), what a trial and a study record in it (`records`), and
MLflow (`tracking`, `readback`, `startup`): the one stage that imports MLflow."""
