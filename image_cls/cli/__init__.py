"""The command-line tools: l2t-image-train-teacher, l2t-image-train-student, l2t-image-evaluate, l2t-image-plot,
and the options they share."""
