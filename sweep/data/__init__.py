"""The data a study trains on: a `Dataset` of `Split`s and its checks (`splits`), the bundled
and downloaded datasets (`datasets`), your own loader and image folders (`user_loaders`).
TensorFlow only where a source is a `tf.data` stream or an image folder."""
