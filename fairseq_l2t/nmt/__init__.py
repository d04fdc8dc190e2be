"""NMT experiments through fairseq's own command-line tools: the offline parallel corpora (the Ding
de-en sentence pairs, the Bible es-en verses), their binarisation, the NMT results table and its
paired bootstrap.  Nothing here is imported by the torch-only core or by the plugin; fairseq is
imported only inside the functions that read its checkpoints."""
