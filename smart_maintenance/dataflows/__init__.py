"""The flow's wiring. A process that imports a dataflow is a flow process: its collector is set for a long-lived
heap (`heap.py`) here, before the flow module's imports, which otherwise run ~200 young and one or two full
collections that find nothing (~0.03-0.06 CPU-s of every process's start; `build_flow` sets it again). Its
interpreter's shutdown skips the collections of that heap (`heap.freeze_at_exit`: ~0.2-0.3 CPU-s of every
process's end). Its OpenBLAS gets one thread (`blas.py`: the pool's threads only spin, ~0.07 CPU-s of every
process's start), set before the flow module imports numpy."""

from smart_maintenance.blas import one_blas_thread
from smart_maintenance.heap import freeze_at_exit, tune_gc

one_blas_thread()
tune_gc()
freeze_at_exit()
