"""The fluid lower bound on a plan's cost: valid against CP-SAT's optimum, tight on a backlog, stopping the solve."""

from __future__ import annotations

import random

import pytest

import smart_maintenance.operators.plan.scheduling as scheduling
from smart_maintenance.operators.plan.bounds import fluid_bound
from smart_maintenance.operators.plan.greedy_schedule import Job, Problem, TechnicianShifts, build_problem
from smart_maintenance.operators.plan.lp_bound import Relaxation, time_indexed_bound

SKILLS = ("pumps", "electrical", "mechanical")


def random_instance(rng: random.Random, max_jobs: int) -> tuple[list[Job], list[TechnicianShifts]]:
    """Windows with gaps, overlapping skills, releases, dues past and future, some pins."""
    techs = []
    for k in range(rng.randint(1, 3)):
        windows, t = [], rng.randint(0, 60)
        for _ in range(rng.randint(1, 3)):
            end = t + rng.randint(30, 300)
            windows.append((t, end))
            t = end + rng.randint(1, 200)
        techs.append(TechnicianShifts(f"t{k}", frozenset(rng.sample(SKILLS, rng.randint(1, 3))), tuple(windows)))
    jobs = []
    for i in range(rng.randint(1, max_jobs)):
        release = rng.randint(0, 300)
        pin_tech = pin_start = None
        if rng.random() < 0.1:
            pin_tech = f"t{rng.randrange(len(techs))}"
            pin_start = rng.randint(0, 600) if rng.random() < 0.5 else None
        jobs.append(Job(f"j{i}", frozenset(rng.sample(SKILLS, rng.randint(0, 2))), rng.randint(5, 150), release,
                        release + rng.randint(-100, 400), rng.randint(1, 5), pin_tech, pin_start))
    return jobs, techs


def optimum(jobs: list[Job], techs: list[TechnicianShifts], monkeypatch: pytest.MonkeyPatch) -> int | None:
    """CP-SAT's proven optimum, proven by CP-SAT alone (the bound under test is kept out of the solve)."""
    with monkeypatch.context() as m:
        m.setattr(scheduling, "fluid_bound", Problem.lower_bound)
        m.setattr(scheduling, "time_indexed_relaxation", lambda problem: Relaxation(0, {}))
        plan = scheduling.solve(jobs, techs, time_limit_s=20.0, workers=1, strategy="whole")
    return plan.objective if plan.status == "OPTIMAL" else None


@pytest.mark.parametrize("seed,max_jobs", [(1, 6), (2, 9)])
def test_the_fluid_bound_is_never_above_an_optimal_plan(seed: int, max_jobs: int, monkeypatch):
    rng = random.Random(seed)
    checked = raised = 0
    for _ in range(200):
        jobs, techs = random_instance(rng, max_jobs)
        problem = build_problem(jobs, techs)
        bound = fluid_bound(problem)
        assert bound >= problem.lower_bound()
        best = optimum(jobs, techs, monkeypatch)
        if best is None:
            continue
        assert bound <= best, (jobs, techs)
        checked += 1
        raised += bound > problem.lower_bound()
    assert checked >= 190 and raised >= 40  # contention is common in these instances: the check has teeth


def backlog(n_jobs: int, priority: int | None = None) -> tuple[list[Job], list[TechnicianShifts]]:
    """Hour-long jobs, all overdue, for three technicians on one long shift."""
    techs = [TechnicianShifts(f"t{k}", frozenset({"pumps"}), ((0, 3000),)) for k in range(3)]
    jobs = [Job(f"wo-{i:02d}", frozenset({"pumps"}), 60, 0, -10 * i - 1,
                priority if priority is not None else 1 + (i * 7) % 5) for i in range(n_jobs)]
    return jobs, techs


def test_on_equal_jobs_the_bound_is_the_optimum():
    # equal durations: highest priority first, round robin, is optimal (cost computed by hand below)
    jobs, techs = backlog(24)
    order = sorted(jobs, key=lambda j: -j.priority)
    best = sum(100 * j.priority * ((pos // 3 + 1) * 60 - j.due_min) + (pos // 3) * 60 for pos, j in enumerate(order))
    bound = fluid_bound(build_problem(jobs, techs))
    assert bound <= best and (best - bound) / best < 0.003
    assert build_problem(jobs, techs).lower_bound() < 0.6 * best


def record_work(monkeypatch) -> list[float]:
    """The deterministic work each solver call of `scheduling.solve` spends, as its budget counts it."""
    spent: list[float] = []
    original = scheduling._Budget.spend

    def spend(self, solver, at_least=0.0):
        spent.append(max(solver.deterministic_time, at_least))
        original(self, solver, at_least)

    monkeypatch.setattr(scheduling._Budget, "spend", spend)
    return spent


def test_a_backlog_stops_at_a_proven_gap_instead_of_spending_its_work(monkeypatch):
    spent = record_work(monkeypatch)
    jobs, techs = backlog(24, priority=3)
    plans = [scheduling.solve(jobs, techs, time_limit_s=60.0, work_limit=1.0, workers=1, gap_limit=0.01)
             for _ in range(2)]
    plan = plans[0]
    assert plan.status == "OPTIMAL" and plan.gap == 0.0 and plan.method == "cpsat"  # greedy's plan, proven
    assert sum(spent) < 0.05  # of a work limit of 1.0 (without the bound: all of it, gap 0.54)
    assert plans[0].assignments == plans[1].assignments and plans[0].objective == plans[1].objective


def test_neighbourhood_rounds_stop_once_the_plan_is_within_the_gap(monkeypatch):
    rounds: list[float] = []
    original = scheduling._Budget.spend

    def spend(self, solver, at_least=0.0):
        rounds.append(solver.deterministic_time)
        original(self, solver, at_least)

    monkeypatch.setattr(scheduling._Budget, "spend", spend)
    jobs, techs = backlog(24, priority=3)
    plan = scheduling.solve(jobs, techs, time_limit_s=60.0, work_limit=1.0, workers=1, gap_limit=0.01,
                            strategy="neighbourhoods")
    assert plan.gap is not None and plan.gap <= 0.01 and plan.method == "cpsat_lns"
    assert len(rounds) == 1


@pytest.mark.parametrize("seed,max_jobs,slot", [(4, 6, None), (5, 9, None), (6, 9, 45)])
def test_the_time_indexed_bound_is_never_above_an_optimal_plan(seed: int, max_jobs: int, slot, monkeypatch):
    # slot None: chosen by size (1-2 minutes here); 45: coarser than most durations (5-150), pieces 45 long
    rng = random.Random(seed)
    checked = above_fluid = 0
    for _ in range(150):
        jobs, techs = random_instance(rng, max_jobs)
        problem = build_problem(jobs, techs)
        bound = time_indexed_bound(problem, slot)
        best = optimum(jobs, techs, monkeypatch)
        if best is None:
            continue
        assert bound <= best, (jobs, techs)
        checked += 1
        above_fluid += bound > fluid_bound(problem)
    assert checked >= 140 and above_fluid >= 20  # the check has teeth: the LP often beats the fluid bound


def long_jobs(n_jobs: int) -> tuple[list[Job], list[TechnicianShifts]]:
    """Overdue jobs longer than half a shift: one per 8-hour shift, which the fluid bound does not see."""
    techs = [TechnicianShifts(f"t{k}", frozenset({"pumps"}),
                              tuple((d * 1440 + 60 * k, d * 1440 + 60 * k + 480) for d in range(4))) for k in range(2)]
    jobs = [Job(f"wo-{i:02d}", frozenset({"pumps"}), 250 + 20 * (i % 5), 0, -10 * i - 1, 1 + (i * 3) % 5)
            for i in range(n_jobs)]
    return jobs, techs


def test_jobs_that_fill_a_shift_are_planned_from_the_lp_and_proven_at_once(monkeypatch):
    spent = record_work(monkeypatch)
    jobs, techs = long_jobs(10)  # 10 jobs for 8 shifts: two are left out
    problem = build_problem(jobs, techs)
    assert fluid_bound(problem) < 0.6 * time_indexed_bound(problem)
    plan = scheduling.solve(jobs, techs, time_limit_s=120.0, work_limit=1.0, workers=1, gap_limit=0.01)
    # the LP's order as a list schedule is optimal here and the LP proves it: no search at all
    # (from greedy's start, 1.0 det-s of search ends at 10,904,240, gap 0.30)
    assert plan.status == "OPTIMAL" and plan.gap == 0.0 and plan.method == "cpsat"
    assert plan.objective < 0.75 * scheduling.greedy(jobs, techs).objective
    assert sum(spent) < 0.01  # of a work limit of 1.0


@pytest.mark.slow
def test_the_fluid_bound_is_never_above_an_optimal_plan_on_thousands(monkeypatch):
    rng = random.Random(3)
    checked = 0
    for _ in range(3000):
        jobs, techs = random_instance(rng, 8)
        bound = fluid_bound(build_problem(jobs, techs))
        best = optimum(jobs, techs, monkeypatch)
        if best is not None:
            assert bound <= best, (jobs, techs)
            checked += 1
    assert checked >= 2900
