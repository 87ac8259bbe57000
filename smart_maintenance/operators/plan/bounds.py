"""A lower bound on any plan's cost that sees contention: the fluid (mean-busy-time) relaxation.

`Problem.lower_bound` prices each job as if it were alone, which on a backlog
(50 overdue orders, 6 technicians) stays a third under the best plan known.
`fluid_bound` prices the queue: a group of technicians can only do so much
work per minute.

Why it is a lower bound (valid for every feasible plan, stability costs
excluded, which are >= 0):

1. Linear under-estimate. A placed job's cost is
   ``f_j(C) = W*p*max(0, C - due) + (C - d - est)`` with C its completion,
   W = TARDINESS_WEIGHT, p its priority, d its duration. For any
   lam in [0, 1], ``f_j(C) >= w_j*C + b_j`` with ``w_j = 1 + lam*W*p`` and
   ``b_j = -d - est - lam*W*p*due`` (max(0, x) >= lam*x). Every lam gives a
   valid bound; the lams below are only chosen to make it tight.
2. Mean busy time. In a plan a job runs without interruption, so its
   completion is ``C_j = M_j + d_j/2`` with M_j its mean busy time, and
   ``sum w_j*C_j = sum w_j*M_j + sum w_j*d_j/2``.
3. Fluid relaxation. Take a set T of technicians and the jobs S whose every
   option is on a technician of T. In any plan the jobs of S run only on T,
   one at a time per technician, only inside T's windows less the fixed
   jobs' intervals, and not before their earliest start est_j. So their
   processing, as a rate over time, fits under the capacity a(t) = number of
   T's technicians free at t, after each job's release. Dropping the rules
   "one technician per job", "fits inside one window" and "without
   interruption" only enlarges the set of schedules, so the least
   ``sum w_j*M_j`` over fluid schedules is at most the plan's.
4. That least value is reached by preemptive WSPT: at each instant all
   capacity goes to the released job with the largest w_j/d_j (an exchange
   argument: moving an equal amount of work of a larger-ratio job to an
   earlier instant, and the smaller-ratio job's to the later one, where
   both are released, lowers sum (w_j/d_j) * integral t*rate_j(t) dt; it
   needs no constant capacity).
5. Dropped jobs. After the last window of T the relaxation has unlimited
   capacity (instant completion), so a dropped job maps to a fluid job with
   M_j = end of T's windows <= horizon H, ``C_j <= H + d_j/2``; its linear
   cost there is at most ``W*p*(H + d - due) + H - est``, which is at most
   its penalty ``W*p*max(2H - due, H) + H`` because d <= H (the job fits a
   window of the horizon).
6. Sum. Jobs outside S, and fixed jobs (their cost is known), are priced by
   their cost alone, which is a bound on each separately; the cost is a sum
   over jobs, so ``sum over S of the fluid bound + sum outside S of alone``
   bounds every plan. For sets T1, T2 with no technician in common the job
   sets are disjoint too (a job's technicians lie in both), and each plan
   restricted to T1 and to T2 is a fluid schedule of each, so their gains
   over `alone` add up: the best family of pairwise disjoint candidate sets
   is kept. Costs are integers, so a fluid value is rounded up (less a
   margin for the floats' rounding error).

With all jobs released at once on m always-available technicians this is
Eastman, Even and Isaacs' bound (WSPT on one machine m times as fast, plus
(m-1)/(2m) sum w_j d_j).

>>> from smart_maintenance.operators.plan.greedy_schedule import Job, TechnicianShifts, build_problem
>>> t = [TechnicianShifts(f"t{k}", frozenset({"p"}), ((0, 600),)) for k in range(2)]
>>> jobs = [Job(f"j{i}", frozenset({"p"}), 60, 0, 0, 1) for i in range(4)]  # 4 overdue hours for 2 people
>>> problem = build_problem(jobs, t)
>>> problem.lower_bound(), fluid_bound(problem)  # the best plan: 2 x 6,000 + 2 x 12,060
(24000, 36120)
"""

from __future__ import annotations

import heapq
import math
from itertools import combinations

from smart_maintenance.operators.plan.greedy_schedule import TARDINESS_WEIGHT, Problem

MAX_TECH_SETS = 64
"""At most this many candidate technician sets: every set when there are few technicians; else all of
them, each job's qualified set, then unions of two."""
EXACT_TECHS = 10
"""Up to this many technicians the best disjoint family of sets is found exactly (2^n states)."""
LAMBDA_ROUNDS = 3
"""How often the linear under-estimates are re-chosen from the last fluid schedule's completions."""


def job_alone(problem: Problem, j: int) -> int:
    """Modelled job j's cost were it alone (earliest start on its best option; or its penalty if cheaper)."""
    job, est = problem.jobs[problem.modelled[j]], problem.earliest_start(j)
    alone = min(
        TARDINESS_WEIGHT * job.priority * max(0, ranges[0][0] + job.duration_min - job.due_min) + ranges[0][0] - est
        for _, ranges in problem.options[j]
    )
    return alone if j in problem.fixed else min(alone, problem.penalty(j))


def fluid_bound(problem: Problem) -> int:
    """A lower bound on every plan's cost (without stability costs), at least `Problem.lower_bound()`.

    See the module docstring for the proof. Each candidate technician set T
    gains (fluid bound of its jobs) - (their costs alone); sets with no
    technician in common price disjoint jobs on disjoint technicians, so
    their gains add up: the best family of pairwise disjoint sets is kept
    (exactly for up to EXACT_TECHS technicians, greedily by gain above).
    Deterministic; O(sets x rounds x n log n).
    """
    n = len(problem.modelled)
    alone = [job_alone(problem, j) for j in range(n)]
    if n == 0:
        return 0
    free = _free_windows(problem)
    techs_of = [frozenset(k for k, _ in problem.options[j]) for j in range(n)]
    movable = [j for j in range(n) if j not in problem.fixed]
    gains: dict[frozenset[int], int] = {}
    for tech_set in _candidate_sets(problem, [techs_of[j] for j in movable]):
        jobs = [j for j in movable if techs_of[j] <= tech_set]
        if not jobs:
            continue
        profile = _capacity(free, tech_set)
        base = sum(alone[j] for j in jobs)
        lam = {j: 1.0 if _always_late(problem, j) else 0.0 for j in jobs}
        best = base
        for _ in range(LAMBDA_ROUNDS):
            value, completion = _fluid_value(problem, jobs, lam, profile)
            best = max(best, _round_up(value))
            new = {j: 1.0 if completion[j] > problem.jobs[problem.modelled[j]].due_min else 0.0 for j in jobs}
            if new == lam:
                break
            lam = new
        if best > base:
            gains[tech_set] = best - base
    return sum(alone) + _best_disjoint(gains, len(problem.technicians))


def _best_disjoint(gains: dict[frozenset[int], int], n_techs: int) -> int:
    """The largest total gain of pairwise disjoint technician sets."""
    if not gains:
        return 0
    if n_techs > EXACT_TECHS:  # greedy, largest gain first (ties by the set), in a fixed order
        used: set[int] = set()
        total = 0
        for tech_set, gain in sorted(gains.items(), key=lambda kv: (-kv[1], sorted(kv[0]))):
            if not used & tech_set:
                used |= tech_set
                total += gain
        return total
    masks = [(sum(1 << k for k in s), g) for s, g in gains.items()]
    best = [0] * (1 << n_techs)
    for mask in range(1, 1 << n_techs):
        low = mask & -mask
        top = best[mask ^ low]  # the lowest technician in no set
        for m, g in masks:
            if m & low and m & mask == m:
                top = max(top, g + best[mask ^ m])
        best[mask] = top
    return best[-1]


def _always_late(problem: Problem, j: int) -> bool:
    job = problem.jobs[problem.modelled[j]]
    return problem.earliest_start(j) + job.duration_min >= job.due_min


def _round_up(value: float) -> int:
    """The least integer a plan's (integer) cost can be, given `value` below it, with room for float error."""
    return math.ceil(value - 1e-9 * abs(value) - 1e-6)


def _free_windows(problem: Problem) -> list[list[tuple[int, int]]]:
    """Each technician's windows less the intervals of fixed jobs on them."""
    busy: list[list[tuple[int, int]]] = [[] for _ in problem.technicians]
    for j in problem.fixed:
        (k, ((s, _),)), = problem.options[j]
        busy[k].append((s, s + problem.jobs[problem.modelled[j]].duration_min))
    out = []
    for k, tech in enumerate(problem.technicians):
        windows = list(tech.windows)
        for bs, be in busy[k]:
            windows = [piece for a, b in windows for piece in ((a, min(b, bs)), (max(a, be), b)) if piece[0] < piece[1]]
        out.append(windows)
    return out


def _candidate_sets(problem: Problem, qualified: list[frozenset[int]]) -> list[frozenset[int]]:
    """All technicians, each distinct qualified set, then unions of two, up to MAX_TECH_SETS, in a fixed order."""
    m = len(problem.technicians)
    if (1 << m) - 1 <= MAX_TECH_SETS:
        return sorted((frozenset(k for k in range(m) if mask >> k & 1) for mask in range(1, 1 << m)),
                      key=lambda s: (len(s), sorted(s)))
    everyone = frozenset(range(m))
    distinct = sorted(set(qualified), key=lambda s: (len(s), sorted(s)))
    sets = [everyone, *(s for s in distinct if s != everyone)]
    seen = set(sets)
    for a, b in combinations(distinct, 2):
        if len(sets) >= MAX_TECH_SETS:
            break
        u = a | b
        if u not in seen:
            seen.add(u)
            sets.append(u)
    return sets[:MAX_TECH_SETS]


def _capacity(free: list[list[tuple[int, int]]], tech_set: frozenset[int]) -> list[tuple[int, int, int]]:
    """Segments (start, end, technicians free) of the set, in time order, zero-capacity gaps left out."""
    deltas: dict[int, int] = {}
    for k in tech_set:
        for a, b in free[k]:
            deltas[a] = deltas.get(a, 0) + 1
            deltas[b] = deltas.get(b, 0) - 1
    segments, level, last = [], 0, 0
    for t in sorted(deltas):
        if level > 0 and t > last:
            segments.append((last, t, level))
        level += deltas[t]
        last = t
    return segments


def _fluid_value(
    problem: Problem, jobs: list[int], lam: dict[int, float], profile: list[tuple[int, int, int]]
) -> tuple[float, dict[int, float]]:
    """sum over `jobs` of w_j*(M_j + d_j/2) + b_j under preemptive WSPT on `profile`, and each job's C_j."""
    info = {}
    for j in jobs:
        job = problem.jobs[problem.modelled[j]]
        slope = TARDINESS_WEIGHT * job.priority * lam[j]
        info[j] = (1.0 + slope, float(job.duration_min), float(problem.earliest_start(j)),
                   -job.duration_min - problem.earliest_start(j) - slope * job.due_min)
    order = sorted(jobs, key=lambda j: (info[j][2], j))  # by release
    left = {j: info[j][1] for j in jobs}
    moment = dict.fromkeys(jobs, 0.0)  # integral of t * rate_j(t) dt
    heap: list[tuple[float, int]] = []
    nxt = 0
    seg = 0
    t = 0.0
    while seg < len(profile) and (nxt < len(order) or heap):
        a, b, cap = profile[seg]
        t = max(t, a)
        while nxt < len(order) and info[order[nxt]][2] <= t:
            j = order[nxt]
            heapq.heappush(heap, (-info[j][0] / info[j][1], j))
            nxt += 1
        release = info[order[nxt]][2] if nxt < len(order) else math.inf
        if t >= b:
            seg += 1
            continue
        if not heap:
            t = min(release, b)
            continue
        j = heap[0][1]
        finish = t + left[j] / cap
        end = min(b, release, finish)
        moment[j] += cap * (end * end - t * t) / 2
        if end == finish:
            heapq.heappop(heap)
            left[j] = 0.0
        else:
            left[j] -= cap * (end - t)
        t = end
    # past the last window: unlimited capacity, the rest completes at once when released
    for j in jobs:
        if left[j] > 0:
            moment[j] += left[j] * max(t, info[j][2])
    total = 0.0
    completion = {}
    for j in jobs:
        w, d, _, b0 = info[j]
        c = moment[j] / d + d / 2
        completion[j] = c
        total += w * c + b0
    return total, completion
