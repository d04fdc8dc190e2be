"""The noisy-label table: Fashion-MNIST with corrupted training labels (symmetric 40 %, asymmetric 40 % and none),
a trusted dev set of 100 images per class and the clean test set; cross-entropy, tuned label smoothing, online
label smoothing, the tuned generalised cross-entropy, Gold Loss Correction, learning to reweight examples and
L2T-DLF, for MLP and LeNet students and 5 seeds, every one at its dev-selected checkpoint; writes
results/noisy_fashion.{md,json} and its pictures.  Long: run it in the background, resumable with --reuse
(the code: image_cls/experiments/noisy_table.py; --help lists the options)."""
from image_cls.experiments.noisy_table import main

if __name__ == "__main__":
    main(None, __doc__)
