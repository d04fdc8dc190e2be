"""The Fashion-MNIST table (the paper's scale): CE, label smoothing (0.1 and
tuned on dev), online label smoothing and L2T-DLF for MLP and LeNet students,
5 seeds, the same student budget; writes results/fashion_mnist.{md,json}.

Split (image_cls/data.py): the official 60k training images as 50k train /
10k dev (seeded), the official 10k test.  The teacher is rewarded on one half
of dev and judged on the other; every choice is made on dev, the test column
is only reported.  Long: run it in the background, resumable with --reuse.
"""
from image_cls.experiments.results_table import main

if __name__ == "__main__":
    main(None, "fashion_mnist", {"steps": ["mlp=6000", "lenet=3000"], "lr": ["mlp=0.01", "lenet=0.01"], "teacher_lr": 1e-2, "teacher_rounds": 1},
         __doc__)
