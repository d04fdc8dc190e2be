"""Fair comparisons of L2T-DLF against fixed and dynamic baselines, run through the CLIs: the results tables,
the teacher protocols of the ablation and the main job (l2t-image-demo)."""
