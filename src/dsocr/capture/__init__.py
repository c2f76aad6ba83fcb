"""Layer 6: the capture worker (runs inside nsys) and the driver (nsys, baseline, export, manifest)."""
