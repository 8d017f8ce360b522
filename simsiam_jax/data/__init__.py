"""Input pipelines: TFDS/tf.data two-view pipelines and in-memory sources."""
