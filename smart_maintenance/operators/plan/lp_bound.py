"""A lower bound on any plan's cost that sees shifts and skills: a time-indexed LP relaxation.

`bounds.fluid_bound` lets a job be cut across shifts and technicians, so a
360-minute job "fits" into the last two hours of one shift and the first
four of the next, and skills only count where technician sets share no
one. Here each job is placed, as a fraction, at a start on one technician
inside one window, exactly as a plan places it; only the start is known
to within a slot of `slot` minutes.

The LP. Each technician's windows are cut into slots of `slot` minutes
from the window's start. A job's start range on technician k (one per
window, from `build_problem`) is cut along k's slots into pieces
[lo, hi]; a fixed job has the single piece [s, s]. Variables: x_p in
[0, 1] per piece p, u_j in [0, 1] per movable job (left out). Rows::

    sum_{p of j} x_p + u_j == 1                       every job placed once or left out
                                                      (fixed jobs: no u_j)
    sum_{p on k covering tau} x_p <= 1                tau = the last minute of each slot of k

with piece p = [lo, hi] of a job of duration d *covering* the minute tau
when hi <= tau < lo + d: a start anywhere in the piece runs through tau.
Cost: c_p = W*prio*max(0, lo + d - due) + lo - est (the piece's cheapest
start: the cost only grows with the start), and u_j costs its penalty.

Why it is a lower bound (valid for every feasible plan, stability costs
excluded, which are >= 0): take a plan; set x_p = 1 for the piece holding
each placed job's start on its technician (the ranges of a job's options
are disjoint per technician and the pieces cut them, so there is exactly
one; a fixed job's is [s, s]) and u_j = 1 for each left-out job. The
first rows hold. A piece covering tau means its job runs at minute tau,
and a technician does one job at a time, so at most one chosen piece on
k covers tau: the second rows hold. Each job's cost in the plan is at
least c_p of its piece (the cost is nondecreasing in the start and
lo <= start) or exactly its penalty. So the plan's cost is at least the
LP's objective at this x, hence at least the LP's minimum. The value
reported is not GLOP's objective but a Lagrangian bound computed from its
duals y (equality rows free, <= rows clipped to y <= 0), which holds for
any y: for x in [0, 1]^n with the rows satisfied,
``c x >= c x + y (A x - b) >= b y + sum_i min(0, c_i - (A^T y)_i)``.
So solver tolerances cannot make it invalid; costs are integers, so it
is rounded up (less a margin for the floats' own rounding).

The slot is chosen so that the LP has about LP_MAX_ENTRIES nonzeros
(pieces times the slot ends each covers). The argument above holds for
any slot: a coarser one stays valid, only weaker (a piece whose job is
shorter than its slot may cover no slot end at all).

>>> from smart_maintenance.operators.plan.greedy_schedule import Job, TechnicianShifts, build_problem
>>> t = [TechnicianShifts("t0", frozenset({"p"}), ((0, 480), (1440, 1920)))]
>>> jobs = [Job(f"j{i}", frozenset({"p"}), 300, 0, 0, 1) for i in range(2)]  # one per shift, not both in one
>>> problem = build_problem(jobs, t)
>>> from smart_maintenance.operators.plan.bounds import fluid_bound
>>> fluid_bound(problem), time_indexed_bound(problem)  # the best plan: 30,000 + 174,000 + 1,440
(129084, 205440)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from smart_maintenance.operators.plan.greedy_schedule import TARDINESS_WEIGHT, Problem

LP_MAX_ENTRIES = 100_000
"""The slot grows until the LP has about this many nonzeros (pieces x the slots each covers)."""


@dataclass(frozen=True, slots=True)
class Relaxation:
    """The LP's bound, and per modelled job its mean start in the LP (a left-out share counts at twice the
    horizon): an order for a list schedule (Hall, Schulz, Shmoys and Wein's LP-ordered list scheduling)."""

    bound: int
    mean_start: dict[int, float]


def time_indexed_bound(problem: Problem, slot: int | None = None) -> int:
    """A lower bound on every plan's cost (without stability costs); 0 when there is nothing to bound."""
    return time_indexed_relaxation(problem, slot).bound


def time_indexed_relaxation(problem: Problem, slot: int | None = None) -> Relaxation:
    """The LP of the module docstring: its proven bound, and each job's mean start in its solution.

    `slot` (minutes) fixes the slot instead of choosing it. Deterministic (GLOP, one thread).
    """
    n = len(problem.modelled)
    movable = [j for j in range(n) if j not in problem.fixed]
    if not movable:
        return Relaxation(0, {})
    if slot is None:  # pieces ~ starts / slot, each in ~ duration / slot rows
        size = sum((hi - lo + 1) * problem.jobs[problem.modelled[j]].duration_min
                   for j in movable for _, ranges in problem.options[j] for lo, hi in ranges)
        slot = max(1, math.ceil(math.sqrt(size / LP_MAX_ENTRIES)))
    pieces = _pieces(problem, slot)  # (job, tech, lo, hi)
    instants = _instants(problem, slot)  # per tech: sorted minutes
    costs = [_cost(problem, j, lo) for j, _, lo, _ in pieces]
    # rows: per job (==1), then per (tech, instant) (<=1)
    row_of: dict[tuple[int, int], int] = {}
    for k, taus in enumerate(instants):
        for tau in taus:
            row_of[k, tau] = n + len(row_of)
    columns: list[list[int]] = []
    for j, k, lo, hi in pieces:
        d = problem.jobs[problem.modelled[j]].duration_min
        taus = instants[k]
        rows = [j] + [row_of[k, tau] for tau in taus[bisect_right(taus, hi - 1): bisect_right(taus, lo + d - 1)]]
        columns.append(rows)
    for j in movable:
        columns.append([j])
        costs.append(problem.penalty(j))
    rhs = [1.0] * (n + len(row_of))

    solver = pywraplp.Solver.CreateSolver("GLOP")
    xs = [solver.NumVar(0.0, 1.0, "") for _ in columns]
    cons = [solver.Constraint(1.0, 1.0) for _ in range(n)] + [solver.Constraint(-solver.infinity(), 1.0)
                                                              for _ in row_of]
    for x, rows in zip(xs, columns):
        for r in rows:
            cons[r].SetCoefficient(x, 1.0)
    objective = solver.Objective()
    for x, c in zip(xs, costs):
        objective.SetCoefficient(x, float(c))
    objective.SetMinimization()
    if solver.Solve() not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return Relaxation(0, {})
    y = [c.dual_value() for c in cons]
    y[n:] = [min(0.0, v) for v in y[n:]]  # a <= row's multiplier must be <= 0 in a minimisation
    value = sum(b * v for b, v in zip(rhs, y))
    for c, rows in zip(costs, columns):
        value += min(0.0, c - sum(y[r] for r in rows))
    weight, moment = [0.0] * n, [0.0] * n
    starts = [float(lo) for _, _, lo, _ in pieces] + [2.0 * problem.horizon] * len(movable)
    owners = [j for j, _, _, _ in pieces] + movable
    for j, t, x in zip(owners, starts, xs):
        v = x.solution_value()
        if v > 1e-9:
            weight[j] += v
            moment[j] += v * t
    mean = {j: moment[j] / weight[j] if weight[j] > 0 else 2.0 * problem.horizon for j in range(n)}
    return Relaxation(max(0, int(math.ceil(value - 1e-9 * abs(value) - 1e-6))), mean)


def _cost(problem: Problem, j: int, start: int) -> int:
    job = problem.jobs[problem.modelled[j]]
    late = max(0, start + job.duration_min - job.due_min)
    return TARDINESS_WEIGHT * job.priority * late + start - problem.earliest_start(j)


def _pieces(problem: Problem, slot: int) -> list[tuple[int, int, int, int]]:
    """Each job's start ranges cut along its technician's slots (counted from each window's start)."""
    out = []
    for j in range(len(problem.modelled)):
        for k, ranges in problem.options[j]:
            windows = problem.technicians[k].windows
            for lo, hi in ranges:
                w = bisect_right([a for a, _ in windows], lo) - 1
                if j in problem.fixed or w < 0 or lo >= windows[w][1]:  # a fixed start, maybe off-shift
                    out.append((j, k, lo, hi))
                    continue
                a = windows[w][0]
                cell = (lo - a) // slot
                while a + cell * slot <= hi:
                    out.append((j, k, max(lo, a + cell * slot), min(hi, a + (cell + 1) * slot - 1)))
                    cell += 1
    return out


def _instants(problem: Problem, slot: int) -> list[list[int]]:
    """Per technician, the last minute of each slot of each window."""
    out = []
    for tech in problem.technicians:
        taus: list[int] = []
        for a, b in tech.windows:
            taus.extend(min(t + slot, b) - 1 for t in range(a, b, slot))
        out.append(taus)
    return out
