"""What a run writes and reads back: atomic checkpoints, resume, CSV and TensorBoard logs, and PNG plots of them."""
