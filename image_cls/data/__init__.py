"""Data: images as tensors (image_sets), the built-in datasets (builtin_datasets), a user's own
npz or folder of images (user_datasets), the train/dev/test splits and dev halves (splits), and
reproducible minibatches (batches)."""
