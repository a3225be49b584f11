"""Speed, memory and quality benchmarks of ptycho-k3 per Keras backend (``make bench``)."""
