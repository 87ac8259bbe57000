"""The work-order scheduling problem as plain values, its cost, and the greedy baseline.

`scheduling` adds the CP-SAT solver and re-exports everything here; import
from there. This module holds what both methods share so that their
objectives are computed by one function and compare exactly.

Time is whole minutes from a planning origin (`scheduling.shift_windows`
turns registry shifts into windows over a horizon). A job runs without
interruption inside one availability window of one technician, after its
release; technicians do one job at a time.

Cost of a plan (lower is better, integers)::

    TARDINESS_WEIGHT * sum(priority * minutes late)    # dominant
  + sum(start - earliest possible start)                # waiting: work left idle
  + penalty(job) for each job left out for lack of capacity
  + stability_weight per job moved to another technician, and per job moved in time

Waiting stands in for idle time: with fixed durations, starting work as soon
as a qualified technician could take it is what keeps technicians from idling
while work waits. Jobs that can never be placed (no skilled technician, no
window) are reported with a reason and are left out of the cost: no method
can place them, so they would only blur the comparison.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

TARDINESS_WEIGHT = 100
"""One priority-minute late costs as much as 100 minutes of waiting."""

DEFAULT_STABILITY_WEIGHT = 60 * TARDINESS_WEIGHT
"""Moving a planned job (technician or time) costs as much as one hour late at priority 1."""

Status = Literal["OPTIMAL", "FEASIBLE", "GREEDY", "INFEASIBLE"]
Option = tuple[int, tuple[tuple[int, int], ...]]  # (technician index, start ranges (lo, hi))


@dataclass(frozen=True, slots=True)
class Job:
    """An open work order to place. `priority` 1..5 weighs its tardiness.

    A pinned technician (a person's decision) overrides the skill check; a
    pinned start with a pinned technician is a fixed commitment (work in
    progress), placed as given even outside a shift window; a pinned start
    alone means "exactly then", on any qualified technician free in a window.
    Times are minutes from the planning origin; `due_min` may already be past.
    """

    work_order_id: str
    required_skills: frozenset[str]
    duration_min: int
    release_min: int
    due_min: int
    priority: int = 3
    pinned_technician: str | None = None
    pinned_start_min: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "required_skills", frozenset(self.required_skills))
        if self.duration_min <= 0:
            raise ValueError(f"job {self.work_order_id!r}: duration_min must be > 0, got {self.duration_min}")
        if not 1 <= self.priority <= 5:
            raise ValueError(f"job {self.work_order_id!r}: priority must be 1..5, got {self.priority}")


@dataclass(frozen=True, slots=True)
class TechnicianShifts:
    """A technician's skills and availability windows `(start_min, end_min)`, sorted, disjoint."""

    technician_id: str
    skills: frozenset[str]
    windows: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "skills", frozenset(self.skills))
        windows = tuple((int(a), int(b)) for a, b in self.windows)
        object.__setattr__(self, "windows", windows)
        for (a, b), nxt in zip(windows, windows[1:] + ((None, None),)):
            if a >= b:
                raise ValueError(f"technician {self.technician_id!r}: empty window {(a, b)}")
            if nxt[0] is not None and nxt[0] < b:
                raise ValueError(f"technician {self.technician_id!r}: windows must be sorted and disjoint")


@dataclass(frozen=True, slots=True)
class Assignment:
    work_order_id: str
    technician_id: str
    start_min: int
    end_min: int
    tardiness_min: int


@dataclass(frozen=True, slots=True)
class Unassigned:
    """A job no plan places. `reason`: no_skilled_technician | no_window | unknown_technician |
    pinned_conflict | no_capacity."""

    work_order_id: str
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """A schedule and how good it is.

    `status`: OPTIMAL | FEASIBLE (CP-SAT's plan), GREEDY (greedy's, CP-SAT
    found none in time), INFEASIBLE (CP-SAT proved the model infeasible;
    greedy's plan is returned). `method`: cpsat | cpsat_lns | greedy.
    `bound` is a lower bound on the objective and `gap` = (objective - bound)
    / objective; both None from `greedy()` alone. `weighted_tardiness` is
    sum(priority x minutes late).
    """

    assignments: tuple[Assignment, ...]
    unassigned: tuple[Unassigned, ...]
    status: Status
    objective: int
    bound: int | None
    gap: float | None
    solve_s: float
    method: str
    weighted_tardiness: int = 0
    horizon_min: int = 0

    def by_work_order(self) -> dict[str, Assignment]:
        return {a.work_order_id: a for a in self.assignments}

    def rebased(self, minutes: int) -> Plan:
        """The same plan seen from an origin `minutes` later, to pass as `previous` to a re-solve."""
        moved = tuple(replace(a, start_min=a.start_min - minutes, end_min=a.end_min - minutes)
                      for a in self.assignments)
        return replace(self, assignments=moved, horizon_min=self.horizon_min - minutes)


@dataclass(frozen=True, slots=True)
class Problem:
    """What both methods work on: per job its options `(tech_index, start ranges)`."""

    jobs: tuple[Job, ...]
    technicians: tuple[TechnicianShifts, ...]
    options: tuple[tuple[Option, ...], ...]  # per modelled job
    modelled: tuple[int, ...]  # indices into jobs that have options
    rejected: tuple[Unassigned, ...]
    horizon: int
    fixed: frozenset[int] = field(default_factory=frozenset)  # pinned technician and start: must be placed
    est: tuple[int, ...] | None = None  # earliest starts, when a sub-problem keeps its parent's

    def earliest_start(self, j: int) -> int:
        if self.est is not None:
            return self.est[j]
        return min(lo for _, ranges in self.options[j] for lo, _ in ranges)

    def lower_bound(self) -> int:
        """Each job's cost were it alone (no other job in its way): a valid bound on any plan's cost."""
        total = 0
        for j, i in enumerate(self.modelled):
            job, est = self.jobs[i], self.earliest_start(j)
            alone = min(
                TARDINESS_WEIGHT * job.priority * max(0, ranges[0][0] + job.duration_min - job.due_min)
                + ranges[0][0] - est
                for _, ranges in self.options[j]
            )
            total += alone if j in self.fixed else min(alone, self.penalty(j))
        return total

    def penalty(self, j: int) -> int:
        """Leaving a job out counts as finishing it at twice the horizon."""
        job = self.jobs[self.modelled[j]]
        return TARDINESS_WEIGHT * job.priority * max(2 * self.horizon - job.due_min, self.horizon) + self.horizon


def build_problem(
    jobs: tuple[Job, ...] | list[Job], technicians: tuple[TechnicianShifts, ...] | list[TechnicianShifts]
) -> Problem:
    """Prune to the options that can work: skilled technicians, windows the job fits in after release."""
    jobs, technicians = tuple(jobs), tuple(technicians)
    _unique([j.work_order_id for j in jobs], "work_order_id")
    _unique([t.technician_id for t in technicians], "technician_id")
    tech_index = {t.technician_id: k for k, t in enumerate(technicians)}
    horizon = max((b for t in technicians for _, b in t.windows), default=0)
    options: list[tuple[Option, ...]] = []
    modelled: list[int] = []
    rejected: list[Unassigned] = []
    fixed: list[int] = []
    busy_fixed: dict[int, list[tuple[int, int]]] = {}
    for i in sorted(range(len(jobs)), key=lambda i: jobs[i].work_order_id):
        job = jobs[i]
        opts, reason = _job_options(job, technicians, tech_index)
        if opts and job.pinned_technician is not None and job.pinned_start_min is not None:
            k, s, e = opts[0][0], job.pinned_start_min, job.pinned_start_min + job.duration_min
            if any(s < be and bs < e for bs, be in busy_fixed.get(k, ())):
                opts, reason = [], Unassigned(job.work_order_id, "pinned_conflict",
                                              f"overlaps another fixed job of {job.pinned_technician}")
            else:
                busy_fixed.setdefault(k, []).append((s, e))
                fixed.append(len(modelled))
                horizon = max(horizon, e)
        if opts:
            options.append(tuple(opts))
            modelled.append(i)
        else:
            rejected.append(cast(Unassigned, reason))  # no options always comes with a reason
    return Problem(jobs, technicians, tuple(options), tuple(modelled), tuple(rejected), horizon, frozenset(fixed))


def _unique(ids: list[str], what: str) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate {what} in scheduling input")


def _job_options(
    job: Job, technicians: tuple[TechnicianShifts, ...], tech_index: dict[str, int]
) -> tuple[list[Option], Unassigned | None]:
    d, ps = job.duration_min, job.pinned_start_min
    if job.pinned_technician is not None:
        k = tech_index.get(job.pinned_technician)
        if k is None:
            return [], Unassigned(job.work_order_id, "unknown_technician", f"pinned to {job.pinned_technician!r}")
        if ps is not None:
            return [(k, ((ps, ps),))], None
        candidates = [k]
    else:
        candidates = [k for k, t in enumerate(technicians) if job.required_skills <= t.skills]
        if not candidates:
            return [], Unassigned(job.work_order_id, "no_skilled_technician", f"needs {sorted(job.required_skills)}")
    opts = []
    for k in candidates:
        ranges = []
        for ws, we in technicians[k].windows:
            lo, hi = max(ws, job.release_min), we - d
            if ps is not None:
                lo, hi = (ps, ps) if lo <= ps <= hi else (1, 0)
            if lo <= hi:
                ranges.append((lo, hi))
        if ranges:
            opts.append((k, tuple(ranges)))
    if not opts:
        return [], Unassigned(job.work_order_id, "no_window",
                              f"no shift window of a qualified technician fits {d} min after release")
    return opts, None


def plan_cost(
    problem: Problem,
    placed: dict[int, tuple[int, int]],
    previous: Plan | None,
    stability_weight: int,
) -> tuple[int, int]:
    """(objective, weighted tardiness) of `placed`: modelled job -> (tech index, start)."""
    total = weighted = 0
    prev = previous.by_work_order() if previous is not None else {}
    for j, i in enumerate(problem.modelled):
        job = problem.jobs[i]
        if j in placed:
            k, s = placed[j]
            late = max(0, s + job.duration_min - job.due_min)
            weighted += job.priority * late
            total += TARDINESS_WEIGHT * job.priority * late + s - problem.earliest_start(j)
        else:
            k, s = -1, None
            total += problem.penalty(j)
        old = prev.get(job.work_order_id)
        if old is not None:
            tech_id = problem.technicians[k].technician_id if k >= 0 else None
            total += stability_weight * (old.technician_id != tech_id)
            total += stability_weight * (old.start_min != s)
    return total, weighted


def to_plan(problem: Problem, placed: dict[int, tuple[int, int]], *, previous: Plan | None, stability_weight: int,
            **stats: Any) -> Plan:
    """Turn `placed` into a Plan, its cost computed by `plan_cost`."""
    assignments = []
    for j, (k, s) in placed.items():
        job = problem.jobs[problem.modelled[j]]
        end = s + job.duration_min
        assignments.append(Assignment(job.work_order_id, problem.technicians[k].technician_id, s, end,
                                      max(0, end - job.due_min)))
    assignments.sort(key=lambda a: (a.technician_id, a.start_min))
    dropped = [
        Unassigned(problem.jobs[i].work_order_id, "no_capacity", "no free slot in any qualified technician's windows")
        for j, i in enumerate(problem.modelled)
        if j not in placed
    ]
    unassigned = tuple(sorted([*problem.rejected, *dropped], key=lambda u: u.work_order_id))
    objective, weighted = plan_cost(problem, placed, previous, stability_weight)
    return Plan(tuple(assignments), unassigned, objective=objective, weighted_tardiness=weighted,
                horizon_min=problem.horizon, **stats)


def greedy_placement(
    problem: Problem, previous: Plan | None = None, order: dict[int, float] | None = None
) -> dict[int, tuple[int, int]]:
    """Earliest-due-date list scheduling: each job onto the qualified technician that can finish it first.

    Fixed jobs go first, then jobs of `previous` kept where they still fit
    (so a re-plan starts from the current one), then the rest by due date,
    priority and id. Gaps between placed jobs are filled when a job fits.
    `order` (per modelled job, lower first) replaces the due date: the LP's
    mean starts (`lp_bound.Relaxation`) make an LP-ordered list schedule.
    """
    starts: list[list[int]] = [[] for _ in problem.technicians]
    ends: list[list[int]] = [[] for _ in problem.technicians]
    placed: dict[int, tuple[int, int]] = {}
    prev = previous.by_work_order() if previous is not None else {}
    tech_index = {t.technician_id: k for k, t in enumerate(problem.technicians)}

    def first_fit(j: int) -> tuple[int, int] | None:
        d = problem.jobs[problem.modelled[j]].duration_min
        best: tuple[int, int, int] | None = None  # (end, k, start)
        for k, ranges in problem.options[j]:
            for lo, hi in ranges:
                t = _earliest_free(starts[k], ends[k], lo, d)
                if t <= hi:
                    if best is None or (t + d, k) < best[:2]:
                        best = (t + d, k, t)
                    break
        return None if best is None else (best[1], best[2])

    def still_fits(j: int, k: int, s: int) -> bool:
        d = problem.jobs[problem.modelled[j]].duration_min
        in_window = any(k == kk and lo <= s <= hi for kk, ranges in problem.options[j] for lo, hi in ranges)
        return in_window and _earliest_free(starts[k], ends[k], s, d) == s

    def place(j: int, k: int, s: int) -> None:
        d = problem.jobs[problem.modelled[j]].duration_min
        pos = bisect_right(starts[k], s)
        starts[k].insert(pos, s)
        ends[k].insert(pos, s + d)
        placed[j] = (k, s)

    edd = sorted(
        range(len(problem.modelled)),
        key=lambda j: (
            j not in problem.fixed,
            problem.jobs[problem.modelled[j]].work_order_id not in prev,
            problem.jobs[problem.modelled[j]].due_min if order is None else order[j],
            -problem.jobs[problem.modelled[j]].priority,
            problem.jobs[problem.modelled[j]].work_order_id,
        ),
    )
    for j in edd:
        old = prev.get(problem.jobs[problem.modelled[j]].work_order_id)
        hit = None
        if j in problem.fixed:
            k, ranges = problem.options[j][0]
            hit = (k, ranges[0][0])
        elif old is not None and still_fits(j, tech_index.get(old.technician_id, -1), old.start_min):
            hit = (tech_index[old.technician_id], old.start_min)
        if hit is None:
            hit = first_fit(j)
        if hit is not None:
            place(j, *hit)
    return placed


def _earliest_free(starts: list[int], ends: list[int], t: int, d: int) -> int:
    """The first t' >= t where [t', t'+d) overlaps no busy interval (busy sorted and disjoint)."""
    i = bisect_right(ends, t)  # busy intervals ending after t
    while i < len(starts) and starts[i] < t + d:
        t = max(t, ends[i])
        i += 1
    return t


def greedy(
    jobs: tuple[Job, ...] | list[Job],
    technicians: tuple[TechnicianShifts, ...] | list[TechnicianShifts],
    *,
    previous: Plan | None = None,
    stability_weight: int = DEFAULT_STABILITY_WEIGHT,
) -> Plan:
    """The greedy baseline as a Plan (status 'GREEDY'), costed like CP-SAT's.

    >>> t = TechnicianShifts("t1", frozenset({"pumps"}), ((0, 480),))
    >>> p = greedy([Job("wo-1", frozenset({"pumps"}), 60, 0, 30, priority=2)], [t])
    >>> p.assignments[0].end_min, p.weighted_tardiness, p.objective
    (60, 60, 6000)
    """
    t0 = time.perf_counter()  # reported only; the plan does not depend on it
    problem = build_problem(jobs, technicians)
    placed = greedy_placement(problem, previous)
    return to_plan(
        problem, placed, previous=previous, stability_weight=stability_weight,
        status="GREEDY", bound=None, gap=None, solve_s=time.perf_counter() - t0, method="greedy",
    )
