"""Neural network modules. They hold no I/O: files, progress bars and devices live elsewhere."""
