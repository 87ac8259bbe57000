"""The flow's wiring. A process that imports a dataflow is a flow process: its collector is set for a long-lived
heap (`heap.py`) here, before the flow module's imports, which otherwise run ~200 young and one or two full
collections that find nothing (~0.03-0.06 CPU-s of every process's start; `build_flow` sets it again)."""

from smart_maintenance.heap import tune_gc

tune_gc()
