"""Students, their losses and training loops: one student run, teacher episodes along whole student trainings,
evaluation, data parallelism under torchrun, and the RNGs a step draws from."""
