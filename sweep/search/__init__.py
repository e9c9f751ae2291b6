"""The search, in pure Python (no TensorFlow): what a trial tries (`space`), the pattern and
target of each layer (`structure`), where its pruning happens in absolute steps
(`trial_plan`) and when other trials have beaten it (`early_stopping`)."""
