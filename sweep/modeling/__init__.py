"""The one stage that trains: tfmot schedules, which layers are pruned, the models, training,
measurement and the TFLite files, and `train_and_measure`, the one path of a trial, its
rerun and the dense baseline. TensorFlow is imported here (through `sweep._tf`), never
above: the stages above import these modules inside the functions that need them, except
`train_and_measure`, which itself imports the rest when called."""
