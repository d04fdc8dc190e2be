"""Image classification with the L2T-DLF teacher core, in rooms of one kind each, from the bottom up:

- data/: images as tensors, the built-in datasets, a user's own images, splits and reproducible batches;
- training/: the students, their losses, the training loops (student, teacher episodes), evaluation,
  data parallelism and the RNGs;
- run_files/: what a run writes and reads back: checkpoints, resume, CSV and TensorBoard logs, plots;
- cli/: the command-line tools (l2t-image-train-teacher, -train-student, -evaluate, -plot);
- experiments/: the fair comparisons behind the tables and the main job (l2t-image-demo), which run the CLIs.

Each room imports only the rooms listed before it (and fairseq_l2t).
"""
