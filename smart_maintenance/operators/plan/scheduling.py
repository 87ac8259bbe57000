"""Assign open work orders to technicians with OR-Tools CP-SAT.

The model, per job with at least one option (`greedy_schedule` holds the
problem values, the cost function and the greedy baseline)::

    start[j]      the job's start; its domain the union of its options' start ranges
    x[j, k]       technician k does job j; then start[j] == start[j, k], whose domain is k's
                  windows shortened by the duration (after release): the job fits one shift
    interval      optional, fixed size, start[j, k] .. + duration, present iff x[j, k]
    NoOverlap     per technician
    sum_k x[j, k] + dropped[j] == 1   (fixed jobs cannot be dropped)

minimising `greedy_schedule.plan_cost`, so CP-SAT and greedy compare on one
number. Greedy's plan (kept close to `previous`) is the hint, so CP-SAT
starts from it. Small problems are solved as one model; large ones (1000
jobs x 50 technicians) by rounds of CP-SAT on small neighbourhoods of the
current plan, because one model that size gets nowhere in a minute on two
cores (probing alone took 20 s). Under a `work_limit` (one worker, which
runs no LNS of its own) a small problem gets WHOLE_WORK_SHARE of the work
as one model, to prove the gap; if that does not, neighbourhoods spend the
rest improving its plan: on 50 x 5 that gives better plans with a fifth of
the work (one model's bound stays near the per-job bound there, so the 1%
gap is not proven either way). If CP-SAT finds no solution in time, the
greedy plan is returned with method 'greedy'.

`bound` is the largest of CP-SAT's bound, `bounds.fluid_bound` (each job
alone, raised by what a group of technicians can do per minute: a
mean-busy-time relaxation, proven in that module) and
`lp_bound.time_indexed_bound` (each job started inside one shift of one
skilled technician, to within a slot: an LP, proven in that module; only
for problems solved as one model, where a proof is within reach; its
solution, as an order for list scheduling, also gives the start plan
when that beats greedy's), so
`gap` is honest; it is still loose where the LP may leave a job half done
(half-dropped, or two half jobs side by side on one technician). The
search stops at the first plan proven within `gap_limit` of either bound
(the whole model through a solution callback, neighbourhood rounds between
rounds). Determinism: workers and seed are fixed, so a run to
optimality repeats; under a wall-clock limit the result depends on how far
the search got on this machine. `work_limit` counts CP-SAT's deterministic
time on one worker instead, and repeats exactly.

>>> t = TechnicianShifts("t1", frozenset({"pumps"}), ((0, 480),))
>>> jobs = [Job("a", frozenset({"pumps"}), 120, 0, 480, 1), Job("b", frozenset({"pumps"}), 60, 0, 60, 5)]
>>> plan = solve(jobs, [t], time_limit_s=2.0)
>>> [(a.work_order_id, a.start_min) for a in plan.assignments], plan.status, plan.gap
([('b', 0), ('a', 60)], 'OPTIMAL', 0.0)
"""

from __future__ import annotations

import math
import random
import time as _time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal, cast

from ortools.sat.python import cp_model

from smart_maintenance.config.registry import Shift, Technician
from smart_maintenance.operators.plan.bounds import fluid_bound
from smart_maintenance.operators.plan.greedy_schedule import (
    DEFAULT_STABILITY_WEIGHT,
    TARDINESS_WEIGHT,
    Assignment,
    Job,
    Plan,
    Problem,
    Status,
    TechnicianShifts,
    Unassigned,
    build_problem,
    greedy,
    greedy_placement,
    plan_cost,
    to_plan,
)
from smart_maintenance.operators.plan.lp_bound import time_indexed_relaxation

__all__ = [
    "DEFAULT_STABILITY_WEIGHT", "TARDINESS_WEIGHT", "Assignment", "Debounce", "Job", "Plan",
    "TechnicianShifts", "Unassigned", "greedy", "shift_windows", "solve", "technician_shifts",
]

_STATUS: dict[cp_model.CpSolverStatus, Status] = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE"}
_Placed = dict[int, tuple[int, int]]  # modelled job -> (technician index, start)

WHOLE_MODEL_MAX_OPTIONS = 600
"""Above this many (job, technician) options 'auto' improves greedy's plan by neighbourhoods."""
# Tuned on the bench's 1000 x 50 (2 cores): many small rounds beat few large ones.
LNS_TECHS, LNS_START_JOBS, LNS_MIN_JOBS, LNS_MAX_JOBS, LNS_ROUND_S = 4, 40, 10, 60, 0.15
LNS_WORK_PER_S = 0.35
"""Under `work_limit` a round may spend LNS_ROUND_S x this in deterministic seconds (about the
ratio measured on this bench's sub-models: 0.35 deterministic s per wall s)."""
LNS_MIN_ROUND_WORK = 0.005
"""Under `work_limit` a round counts at least this much: building a sub-model costs time that CP-SAT's
deterministic clock does not see (a 50 x 5 instance ran 9,998 rounds of ~0 deterministic s, 59 CPU-s, in 3.0)."""
WHOLE_WORK_SHARE = 0.2
"""Under `work_limit` (one worker) the whole model gets this share of the work to prove the gap; if it
does not, neighbourhoods spend the rest improving its plan."""


# --- shifts -> windows ---------------------------------------------------------------------------


def shift_windows(shift: Shift, origin: datetime, horizon_min: int) -> tuple[tuple[int, int], ...]:
    """A registry shift as availability windows in minutes from `origin`, clipped to [0, horizon_min].

    Shift clock times are read in `origin`'s time zone (pass a local-time
    origin for a plant on local time; DST is handled). `days` are the days a
    shift starts on (0 = Monday); an end at or before the start means the
    shift runs past midnight into the next day, and start == end means 24 h.
    Touching windows merge, so a job may run across back-to-back shifts.

    >>> from smart_maintenance.config.registry import Shift
    >>> monday = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> shift_windows(Shift(start="22:00", end="06:00", days=(0,)), monday, 3 * 1440)
    ((1320, 1800),)
    """
    if origin.tzinfo is None:
        raise ValueError("origin must be timezone-aware")
    if horizon_min < 0:
        raise ValueError(f"horizon_min must be >= 0, got {horizon_min}")
    start_t, end_t = _clock(shift.start), _clock(shift.end)
    windows: list[tuple[int, int]] = []
    first = origin.date() - timedelta(days=1)  # yesterday's night shift may reach into the horizon
    for n in range(horizon_min // 1440 + 3):
        day = first + timedelta(days=n)
        if day.weekday() not in shift.days:
            continue
        s = _at(day, start_t, origin)
        end_day = day if end_t > start_t else day + timedelta(days=1)
        e = _at(end_day, end_t, origin)
        a, b = max(0, _ceil_min(s - origin)), min(horizon_min, _floor_min(e - origin))
        if a < b:
            windows.append((a, b))
    return _merge(windows)


def technician_shifts(technician: Technician, origin: datetime, horizon_min: int) -> TechnicianShifts:
    """A registry technician as the solver sees them."""
    return TechnicianShifts(
        technician.technician_id, frozenset(technician.skills), shift_windows(technician.shift, origin, horizon_min)
    )


def _clock(text: str) -> timedelta:
    h, m = (int(x) for x in text.split(":"))
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440):
        raise ValueError(f"bad clock time {text!r}")
    return timedelta(hours=h, minutes=m)


def _at(day: date, clock: timedelta, origin: datetime) -> datetime:
    """Wall-clock `day + clock` in origin's zone, as UTC (so the difference counts real minutes)."""
    wall = datetime.combine(day, time(0), tzinfo=origin.tzinfo) + clock
    return wall.astimezone(timezone.utc)


def _ceil_min(d: timedelta) -> int:
    return -int(-d.total_seconds() // 60)


def _floor_min(d: timedelta) -> int:
    return int(d.total_seconds() // 60)


def _merge(windows: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


# --- debounced re-solving --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Debounce:
    """When to re-solve: after `quiet_ms` without new work, or `max_wait_ms` after the first change.

    >>> d = Debounce(quiet_ms=2000, max_wait_ms=10000).touch(0).touch(1500)
    >>> d.ready(3000), d.ready(3500)
    (False, True)
    """

    quiet_ms: int
    max_wait_ms: int
    first_change_ms: int | None = None
    last_change_ms: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.quiet_ms <= self.max_wait_ms:
            raise ValueError(f"need 0 <= quiet_ms <= max_wait_ms, got {self.quiet_ms}, {self.max_wait_ms}")

    def touch(self, now_ms: int) -> Debounce:
        first = now_ms if self.first_change_ms is None else self.first_change_ms
        return Debounce(self.quiet_ms, self.max_wait_ms, first, now_ms)

    def ready(self, now_ms: int) -> bool:
        if self.last_change_ms is None or self.first_change_ms is None:
            return False
        return now_ms - self.last_change_ms >= self.quiet_ms or now_ms - self.first_change_ms >= self.max_wait_ms

    def solved(self) -> Debounce:
        return Debounce(self.quiet_ms, self.max_wait_ms)


# --- CP-SAT --------------------------------------------------------------------------------------


def solve(
    jobs: tuple[Job, ...] | list[Job],
    technicians: tuple[TechnicianShifts, ...] | list[TechnicianShifts],
    *,
    time_limit_s: float = 5.0,
    previous: Plan | None = None,
    stability_weight: int = DEFAULT_STABILITY_WEIGHT,
    seed: int = 0,
    workers: int = 2,
    work_limit: float | None = None,
    hint: bool = True,
    strategy: Literal["auto", "whole", "neighbourhoods"] = "auto",
    gap_limit: float = 0.0,
) -> Plan:
    """The best plan CP-SAT finds within `time_limit_s`; greedy's if it finds none.

    `previous` (in the same time origin: see `Plan.rebased`) makes moving a
    job it placed cost `stability_weight` for another technician and again
    for another start, so a re-plan keeps assignments unless it is clearly
    better. `strategy`: 'whole' solves one model; 'neighbourhoods' improves
    greedy's plan by re-solving small parts of it (a few technicians around
    a late job) with CP-SAT, which is what still makes progress on 1000 x 50
    in a minute on two cores; 'auto' picks by model size. `work_limit`
    bounds the search in CP-SAT's deterministic seconds on one worker instead
    of wall time, so a replay gets the same plan on any machine (keep
    `time_limit_s` above what that takes; it still caps). `hint=False` hides
    greedy's plan from the whole-model solver (to test the fallback).
    `gap_limit` stops the search once the plan is proven within that share of
    CP-SAT's bound (0.01: at most 1% worse than the best possible): a small
    plan ends in a fraction of a second instead of spending its whole work
    limit proving the last percent (30 orders x 5 technicians: 11.4 s to
    prove optimal, 0.5 s to within 1%). The status is then FEASIBLE with
    its `gap`; OPTIMAL means a gap of 0.
    """
    if time_limit_s < 0 or workers < 1 or stability_weight < 0 or (work_limit is not None and work_limit <= 0):
        raise ValueError("need time_limit_s >= 0, workers >= 1, stability_weight >= 0, work_limit > 0 or None")
    if not 0 <= gap_limit < 1:
        raise ValueError(f"need 0 <= gap_limit < 1, got {gap_limit}")
    t0 = _time.perf_counter()  # reported, and the wall-clock cap; the plan depends on it only via that cap
    budget = _Budget(t0 + time_limit_s, work_limit, seed, workers, gap_limit)
    problem = build_problem(jobs, technicians)
    start = greedy_placement(problem, previous)
    kw: dict[str, Any] = dict(previous=previous, stability_weight=stability_weight)
    if not problem.modelled:
        return to_plan(problem, {}, **kw, status="OPTIMAL", bound=0, gap=0.0, solve_s=_time.perf_counter() - t0,
                       method="cpsat")
    floor = fluid_bound(problem)  # every plan costs at least this: each job alone, and the queue's contention
    whole = strategy == "whole" or (strategy == "auto" and sum(map(len, problem.options)) <= WHOLE_MODEL_MAX_OPTIONS)
    if whole:
        # small enough to prove a gap: shifts and skills exactly (0.2-0.3 CPU-s at 50 x 5; 2 s at 1000 x 50),
        # and the LP's order as a list schedule when it beats greedy's plan as the start
        relaxation = time_indexed_relaxation(problem)
        floor = max(floor, relaxation.bound)
        if relaxation.mean_start:  # empty when nothing moves or the LP failed
            by_lp = greedy_placement(problem, previous, relaxation.mean_start)
            if plan_cost(problem, by_lp, previous, stability_weight)[0] < plan_cost(problem, start, previous,
                                                                                     stability_weight)[0]:
                start = by_lp
        mixed = strategy == "auto" and budget.work is not None
        share = WHOLE_WORK_SHARE if mixed else 1.0
        status, placed, bound = _solve_whole(problem, start if hint else None, budget, share, floor, **kw)
        method = "cpsat"
        if mixed and status == "FEASIBLE" and not _within(placed, max(bound or 0, floor), problem, budget.gap, kw):
            # one worker runs no LNS of its own: improve its plan by neighbourhoods with the rest of the work
            better = _improve_by_neighbourhoods(problem, placed or start, budget, floor, **kw)
            placed, method = (placed, method) if better is None else (better, "cpsat_lns")
    else:
        placed = _improve_by_neighbourhoods(problem, start, budget, floor, **kw)
        status, bound, method = "FEASIBLE", None, "cpsat_lns"  # placed is None: no round solved
    if placed is None:
        status, placed, method = ("INFEASIBLE" if status == "INFEASIBLE" else "GREEDY"), start, "greedy"
    plan = to_plan(problem, placed, **kw, status=status, bound=None, gap=None, solve_s=0.0, method=method)
    bound = min(max(bound or 0, floor), plan.objective)
    if bound == plan.objective and status == "FEASIBLE":
        status = "OPTIMAL"
    elif bound < plan.objective and status == "OPTIMAL":  # CP-SAT says OPTIMAL when it stops at the gap limit
        status = "FEASIBLE"
    gap = (plan.objective - bound) / max(abs(plan.objective), 1)
    # status is None only with placed None, which the greedy fallback above replaced
    return replace(plan, status=cast(Status, status), bound=bound, gap=gap, solve_s=_time.perf_counter() - t0)


@dataclass
class _Budget:
    """What is left to spend: wall time always, deterministic work when asked (then on one worker)."""

    deadline: float
    work: float | None
    seed: int
    workers: int
    gap: float = 0.0

    def exhausted(self) -> bool:
        return self.deadline - _time.perf_counter() <= 0.01 or (self.work is not None and self.work <= 1e-3)

    def solver(self, round_s: float | None = None, seed: int | None = None, work_share: float = 1.0
               ) -> cp_model.CpSolver:
        solver = cp_model.CpSolver()
        p = solver.parameters
        left = max(0.0, self.deadline - _time.perf_counter())
        p.random_seed = self.seed if seed is None else seed
        p.num_workers = self.workers if self.work is None else 1
        if self.work is None:
            p.max_time_in_seconds = left if round_s is None else min(left, round_s)
        else:  # the wall clock only as a safety cap, so that the work limit is what stops a round
            p.max_time_in_seconds = left
            work = self.work * work_share
            p.max_deterministic_time = work if round_s is None else min(work, round_s * LNS_WORK_PER_S)
        p.linearization_level = 2  # scheduling cuts: better plans and bounds
        p.relative_gap_limit = self.gap
        p.cp_model_probing_level = 0  # probing alone took 20 s on 1000 x 50
        return solver

    def spend(self, solver: cp_model.CpSolver, at_least: float = 0.0) -> None:
        if self.work is not None:
            self.work -= max(solver.deterministic_time, at_least)


def _within(placed: _Placed | None, bound: int, problem: Problem, gap: float, kw: dict[str, Any]) -> bool:
    """Whether `placed` is proven within `gap` of `bound`, a lower bound on every plan's cost."""
    if placed is None:
        return False
    cost = plan_cost(problem, placed, kw["previous"], kw["stability_weight"])[0]
    return cost - bound <= gap * max(abs(cost), 1)


def _solve_whole(
    problem: Problem, hint: _Placed | None, budget: _Budget, work_share: float = 1.0, floor: int = 0, *,
    previous: Plan | None, stability_weight: int
) -> tuple[Status | None, _Placed | None, int | None]:
    """(status, placement or None, CP-SAT's bound or None). `floor`: a lower bound on every plan's cost."""
    m = _build_model(problem, previous, stability_weight)
    if hint is not None:
        m.add_hint(problem, hint)
    solver = budget.solver(work_share=work_share)
    status = solver.Solve(m.model, _StopWithin(floor, budget.gap))
    budget.spend(solver)
    raw = solver.BestObjectiveBound()
    bound = int(math.ceil(raw - 1e-6)) if status != cp_model.INFEASIBLE and math.isfinite(raw) else None
    if status not in _STATUS:
        return ("INFEASIBLE" if status == cp_model.INFEASIBLE else None), None, bound
    return _STATUS[status], m.placement(solver), bound


class _StopWithin(cp_model.CpSolverSolutionCallback):
    """Stop the search at a solution proven within `gap` of `floor`, a lower bound CP-SAT does not know.

    CP-SAT's own gap limit compares with its own bound, which on a backlog stays
    near each job's cost alone. Called at every solution in the order the search
    finds them, so with one worker the stop, and the plan, repeat exactly.
    """

    def __init__(self, floor: int, gap: float) -> None:
        super().__init__()
        self.floor, self.gap = floor, gap

    def on_solution_callback(self) -> None:
        cost = self.ObjectiveValue()
        if cost - self.floor <= self.gap * max(abs(cost), 1):
            self.StopSearch()


def _improve_by_neighbourhoods(
    problem: Problem, placed: _Placed, budget: _Budget, floor: int = 0, *, previous: Plan | None,
    stability_weight: int
) -> _Placed | None:
    """Large-neighbourhood search: free the jobs of a few technicians around a late job, re-solve, keep if cheaper.

    Every other job stays where it is, as a fixed interval; the cost is a
    sum over jobs, so a cheaper sub-plan is a cheaper plan. Rounds stop
    once the plan is within the budget's gap of `floor` (a lower bound on
    every plan's cost). Without a `work_limit`, how many rounds fit depends
    on the machine's speed.
    """
    if len(problem.fixed) == len(problem.modelled):
        return placed
    rng = random.Random(budget.seed)  # noqa: S311 a seeded search, not cryptography
    cost = plan_cost(problem, placed, previous, stability_weight)[0]
    size, solved = LNS_START_JOBS, False
    while not budget.exhausted() and not (solved and cost - floor <= budget.gap * max(abs(cost), 1)):
        free, techs = _neighbourhood(problem, placed, rng, size)
        sub, back = _subproblem(problem, placed, free, techs)
        m = _build_model(sub, previous, stability_weight)
        m.add_hint(sub, {jl: (techs.index(placed[j][0]), placed[j][1]) for jl, j in enumerate(back) if j in placed})
        solver = budget.solver(LNS_ROUND_S, rng.randrange(1 << 30))
        status = solver.Solve(m.model)
        budget.spend(solver, LNS_MIN_ROUND_WORK)
        if status in _STATUS:
            solved = True
            new = {j: kp for j, kp in placed.items() if j not in free}
            for jl, (kl, s) in m.placement(solver).items():
                if back[jl] in free:
                    new[back[jl]] = (techs[kl], s)
            new_cost = plan_cost(problem, new, previous, stability_weight)[0]
            if new_cost < cost:
                placed, cost = new, new_cost
        grow = status == cp_model.OPTIMAL
        size = max(LNS_MIN_JOBS, min(LNS_MAX_JOBS, int(size * (1.15 if grow else 0.8))))
    return placed if solved else None


def _neighbourhood(problem: Problem, placed: _Placed, rng: random.Random, size: int) -> tuple[set[int], list[int]]:
    """A costly job (late or left out; sometimes any job), 2..LNS_TECHS of its technicians,
    and the `size` jobs of theirs that start nearest to it in time."""
    n = len(problem.modelled)
    movable = [j for j in range(n) if j not in problem.fixed]
    late = [j for j in movable if j not in placed or _late(problem, j, placed[j][1]) > 0]
    pool = late if late and rng.random() < 0.8 else movable
    j0 = rng.choice(pool)
    techs = [k for k, _ in problem.options[j0]]
    rng.shuffle(techs)
    techs = techs[: rng.randint(2, LNS_TECHS)]
    if j0 in placed and placed[j0][0] not in techs:
        techs[-1] = placed[j0][0]
    chosen = set(techs)
    centre = placed[j0][1] if j0 in placed else problem.jobs[problem.modelled[j0]].release_min
    near = sorted(
        (j for j, (k, s) in placed.items() if k in chosen and j not in problem.fixed),
        key=lambda j: abs(placed[j][1] - centre),
    )
    dropped = [j for j in movable if j not in placed and any(k in chosen for k, _ in problem.options[j])]
    return {j0, *near[:size], *dropped[:LNS_MIN_JOBS]}, sorted(techs)


def _late(problem: Problem, j: int, start: int) -> int:
    job = problem.jobs[problem.modelled[j]]
    return start + job.duration_min - job.due_min


def _subproblem(problem: Problem, placed: _Placed, free: set[int], techs: list[int]) -> tuple[Problem, list[int]]:
    """The free jobs on `techs` (their other options cut away), the rest of those technicians' jobs fixed."""
    local = {k: kl for kl, k in enumerate(techs)}
    back, options, est, fixed = [], [], [], []
    for j in sorted(free):
        options.append(tuple((local[k], r) for k, r in problem.options[j] if k in local))
        est.append(problem.earliest_start(j))
        back.append(j)
    for j, (k, s) in sorted(placed.items()):
        if k in local and j not in free:
            fixed.append(len(back))
            options.append(((local[k], ((s, s),)),))
            est.append(problem.earliest_start(j))
            back.append(j)
    sub = Problem(
        problem.jobs, tuple(problem.technicians[k] for k in techs), tuple(options),
        tuple(problem.modelled[j] for j in back), (), problem.horizon, frozenset(fixed), tuple(est),
    )
    return sub, back


@dataclass
class _Model:
    """The CP-SAT model and the variables needed to read a solution or give a hint."""

    model: cp_model.CpModel = field(default_factory=cp_model.CpModel)
    start: list[cp_model.IntVar] = field(default_factory=list)  # per modelled job
    late: list[cp_model.IntVar] = field(default_factory=list)
    present: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)  # (job, tech) -> bool
    # (job, tech) -> its own start, when a job has several options
    option_start: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    dropped: dict[int, cp_model.IntVar] = field(default_factory=dict)  # job -> bool (not for fixed jobs)
    keep: dict[int, tuple[cp_model.IntVar, int]] = field(default_factory=dict)  # job -> (bool, previous start)

    def placement(self, solver: cp_model.CpSolver) -> dict[int, tuple[int, int]]:
        return {j: (k, solver.Value(self.start[j])) for (j, k), x in self.present.items() if solver.BooleanValue(x)}

    def add_hint(self, problem: Problem, placed: dict[int, tuple[int, int]]) -> None:
        """A complete solution (greedy's) as the solver's starting point."""
        for j, s in enumerate(self.start):
            job = problem.jobs[problem.modelled[j]]
            k, t = placed.get(j, (-1, min(lo for _, r in problem.options[j] for lo, _ in r)))
            self.model.add_hint(s, t)
            self.model.add_hint(self.late[j], max(0, t + job.duration_min - job.due_min) if j in placed else 0)
            if j in self.dropped:
                self.model.add_hint(self.dropped[j], j not in placed)
            if j in self.keep:
                var, old_start = self.keep[j]
                self.model.add_hint(var, j in placed and t == old_start)
        for (j, k), x in self.present.items():
            self.model.add_hint(x, placed.get(j, (-1, 0))[0] == k)
        for (j, k), sk in self.option_start.items():
            k_placed, t = placed.get(j, (-1, 0))
            self.model.add_hint(sk, t if k_placed == k else dict(problem.options[j])[k][0][0])


def _build_model(problem: Problem, previous: Plan | None, stability_weight: int) -> _Model:
    m = _Model()
    model = m.model
    per_tech: list[list[cp_model.IntervalVar]] = [[] for _ in problem.technicians]
    terms: list[cp_model.LinearExprT] = []
    prev = previous.by_work_order() if previous is not None else {}
    for j, i in enumerate(problem.modelled):
        job, opts = problem.jobs[i], problem.options[j]
        d, est = job.duration_min, problem.earliest_start(j)
        all_ranges = [[lo, hi] for _, ranges in opts for lo, hi in ranges]
        s = model.new_int_var_from_domain(cp_model.Domain.FromIntervals(all_ranges), f"s{j}")
        lowest = min(lo for lo, _ in all_ranges)
        m.start.append(s)
        xs = {}
        for k, ranges in opts:
            x = model.new_bool_var(f"x{j}_{k}")
            if len(opts) > 1:
                domain = cp_model.Domain.FromIntervals([list(r) for r in ranges])
                sk = model.new_int_var_from_domain(domain, f"s{j}_{k}")
                model.add(s == sk).OnlyEnforceIf(x)
                m.option_start[j, k] = sk
            else:
                sk = s
            per_tech[k].append(model.new_optional_fixed_size_interval_var(sk, d, x, f"i{j}_{k}"))
            m.present[j, k] = xs[k] = x
        dropped = None
        if j in problem.fixed:
            model.add(sum(xs.values()) == 1)
        else:
            dropped = m.dropped[j] = model.new_bool_var(f"u{j}")
            model.add(sum(xs.values()) + dropped == 1)
            model.add(s == lowest).OnlyEnforceIf(dropped)  # a dropped job neither waits nor is late
            terms.append((problem.penalty(j) - (lowest - est)) * dropped)
        late = model.new_int_var(0, max(0, problem.horizon - job.due_min), f"t{j}")
        m.late.append(late)
        lateness = model.add(late >= s + d - job.due_min)
        if dropped is not None:
            lateness.OnlyEnforceIf(dropped.Not())
            model.add(late == 0).OnlyEnforceIf(dropped)
        # est <= lowest: a sub-problem's est is its parent's
        terms.append(TARDINESS_WEIGHT * job.priority * late + s - est)
        old = prev.get(job.work_order_id)
        if old is not None and stability_weight:
            terms.append(_stability(m, problem, j, xs, dropped, old, stability_weight))
    for intervals in per_tech:
        if len(intervals) > 1:
            model.add_no_overlap(intervals)
    model.minimize(cp_model.LinearExpr.Sum(terms))
    return m


def _stability(m: _Model, problem: Problem, j: int, xs: dict[int, cp_model.IntVar], dropped: cp_model.IntVar | None,
               old: Assignment, weight: int) -> cp_model.LinearExprT:
    """Cost of moving job j away from `old`: `weight` for another technician, `weight` for another start."""
    k_old = next((k for k in xs if problem.technicians[k].technician_id == old.technician_id), None)
    cost = weight * (1 - xs[k_old]) if k_old is not None else weight
    if not _in_domain(problem, j, old.start_min):
        return cost + weight
    same_time = m.model.new_bool_var(f"keep{j}")
    m.model.add(m.start[j] == old.start_min).OnlyEnforceIf(same_time)
    if dropped is not None:
        m.model.add_implication(same_time, dropped.Not())
    m.keep[j] = (same_time, old.start_min)
    return cost + weight * (1 - same_time)


def _in_domain(problem: Problem, j: int, value: int) -> bool:
    # not var.Proto().domain: reading a variable's proto segfaults in ortools 9.15
    return any(lo <= value <= hi for _, ranges in problem.options[j] for lo, hi in ranges)
