"""Bad input at volume: the message parser, the replay readers and the config loaders, fuzzed.

    python bench/fuzz.py [--messages 100000] [--files 4000] [--configs 6000] [--hostile 20000] [--seed 0]

Hypothesis draws seed inputs from the strategies of `tests/unit/test_fuzz_*.py`; a seeded
`random.Random` then varies each seed many times (fields swapped for values from a pool of bad
ones, byte mutations: truncation, flips, invalid UTF-8, BOM, deep nesting, splicing, re-encoding,
repeated columns, corrupt pages), which multiplies the volume cheaply. Every input is audited by
the functions the property tests use, so the bench and the tests hold the same contract.

Accounting. A payload is one generated input: one MQTT/Kafka message (payload + topic, parsed 64
to a batch by `parse_messages`, then `check_readings`), one replay file (CSV, JSONL or Parquet,
planned and read to the end), or one configuration (an environment, a TOML config file, or an
asset registry file). Each payload counts once, as the first that applies:
- crash: the code raised what it does not document. Messages document nothing (bad data is a
  value); files: only `ReplayError` from `plan_file`; config: `ValidationError`, `SettingsError`
  (pydantic-settings, env text that is not the JSON a list/dict field needs), `FileNotFoundError`,
  `RegistryError`.
- unexplained: no crash, but the audit found a problem: a message or a file line that left no
  reading and no reject; a reject without a documented reason, a detail, its origin (its own line
  for files) or its raw payload; a reading that does not echo its message; a list that does not
  parse as its items; a reading kept by `check_readings` that is non-finite, unnamed or outside
  [1990, now + skew]; a config error that names neither its field nor its file, or echoes a
  secret; an accepted config with a non-finite float, a window length <= 0, an ignored variable
  or an impossible shift.
- else explained: readings, rejects, or a documented refusal.
The hostile target (`bench/hostile.py`) sends messages built to stop the flow or blind an asset
(nesting inside each field, long and odd names, sensor and asset floods, future and absurd times,
control characters) through parse, check, admission and the windows, and audits that nothing
raised, every reading ended in a window or a documented dead letter, limits held and no good
reading of a good asset was lost.
Last line: `payloads=<n> crashes=<n> unexplained=<n> max_rss_mb=<m>` (peak RSS of the whole run).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from smart_maintenance.operators.records import RawMessages

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the strategies live with the tests
from bench.hostile import run_hostile
from tests.unit.test_fuzz_config import (
    audit_registry,
    audit_settings,
    env_sets,
    registries,
    toml_configs,
    toml_doc,
)
from tests.unit.test_fuzz_files import (
    _DIR,
    FileCase,
    audit_file,
    csv_files,
    jsonl_files,
    parquet_files,
)
from tests.unit.test_fuzz_parse import (
    BARE,
    MUTATIONS,
    NOW,
    audit_messages,
    documents,
    field_values,
    mutate,
    to_bytes,
    topics,
)

BATCH = 64
KNOWN_BUGS = (  # (pattern in the problem, the strict xfail test that pins the bug)
    (r"Recursion limit reached", "parse: test_a_deeply_nested_list_item_is_a_reject"),
    (r"invalid literal for int|Exceeds the limit", "parse: test_digit_text_that_int_refuses_is_not_a_time"),
    (r"silent_empty_list", "parse: test_an_empty_list_leaves_a_trace"),
    (r"crash:read ReplayError.*UTF8", "files: test_a_non_utf8_cell_is_a_reject_of_its_line"),
    (r"crash:plan UnicodeDecodeError", "files: test_a_non_utf8_header_is_a_replay_error"),
    (r"KeyError.*exists \d+ times", "files: test_repeated_column_names_are_a_replay_error"),
    (r"silent_ragged", "files: test_a_csv_of_only_ragged_rows_rejects_each"),
    (r"crash:read (OSError|ArrowInvalid|ArrowException|ArrowIOError|UnicodeDecodeError)",
     "files: test_a_corrupt_parquet_page_is_a_replay_error"),
    (r"ArrowNotImplementedError|not in range", "files: test_an_odd_parquet_column_type_is_a_replay_error_or_rejects"),
    (r"TOMLDecodeError|crash:UnicodeDecodeError", "config: test_a_broken_toml_file_is_named"),
    (r"crash:RecursionError", "config: test_a_broken_toml_file_is_named / test_a_deeply_nested_registry_..."),
    (r"ignored_env", "config: test_a_misspelt_top_level_variable_is_an_error"),
    (r"echoed_secret", "config: test_a_mistyped_or_misspelt_secret_is_not_echoed"),
    (r"non_finite|bad_window", "config: test_non_finite_or_negative_durations_are_rejected"),
    (r"bad_shift", "config: test_a_registry_with_impossible_shifts_is_rejected"),
)
KEYS = ("asset_id", "sensor", "ts", "value", "values", "unit", "quality", "\x00DUPts", "\x00DUPvalue")


@dataclass
class Tally:
    """What one target did with its payloads."""

    name: str
    payloads: int = 0
    crashed: int = 0
    unexplained: int = 0
    outcomes: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    crashes: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    pinned: dict[str, str] = field(default_factory=dict)  # kind -> the xfail test of its bug
    seconds: float = 0.0

    def count(self, outcome: str, problems: list[str]) -> None:
        """One payload: its outcome and the problems the audit found in it."""
        self.payloads += 1
        crash = [p for p in problems if "crash:" in p]
        if crash or outcome.endswith("crash"):
            self.crashed += 1
            self._note(self.crashes, crash[0] if crash else "crash:?")
            return
        self.outcomes[outcome] += 1
        if problems:
            self.unexplained += 1
            for p in problems:
                self._note(self.problems, p)

    def _note(self, counter: Counter, problem: str) -> None:
        kind, pinned = _kind(problem)
        counter[kind] += 1
        self.examples.setdefault(kind, problem)
        self.pinned.setdefault(kind, pinned)


def _kind(problem: str) -> tuple[str, str]:
    """The problem's kind, and the xfail test that pins its bug ("NEW" when none does)."""
    text = re.sub(r"^#\S+ ", "", problem)
    kind = re.sub(r"^crash:(plan |read )?", lambda m: f"crash at {m.group(1)}" if m.group(1) else "crash ",
                  text).split(":")[0]
    known = [test for pattern, test in KNOWN_BUGS if re.search(pattern, problem)]
    return f"{kind} ({known[0].split(':')[0]})" if known else f"{kind} (new)", known[0] if known else "NEW"


def _quiet(n: int) -> settings:
    return settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))


# -- messages -------------------------------------------------------------------------------------------------


def vary(docs: list, pool: list, rng: Random) -> bytes:
    """A seed message with fields swapped, dropped or doubled, and now and then a byte mutation."""
    r = rng.random()
    if r < 0.04:
        return rng.choice(BARE)
    if r < 0.07:
        return rng.randbytes(rng.randrange(64))
    doc = _copy(rng.choice(docs))
    targets = [doc] if type(doc) is dict else [x for x in doc if type(x) is dict] if type(doc) is list else []
    for _ in range(rng.choice((0, 1, 1, 2, 3)) if targets else 0):
        obj, op = rng.choice(targets), rng.choice(("set", "set", "del", "values"))
        if op == "set":
            obj[rng.choice(KEYS)] = _copy(rng.choice(pool))
        elif op == "del" and obj:
            del obj[rng.choice(list(obj))]
        elif type(obj.get("values")) is dict:
            obj["values"][rng.choice([*obj["values"], "s_new"])] = _copy(rng.choice(pool))
    data = to_bytes(doc)
    if rng.random() < 0.25:
        data = mutate(data, rng.choice(MUTATIONS), rng.randrange(1 << 16), rng.randrange(256),
                      to_bytes(rng.choice(docs)))
    return data


def _copy(x: object) -> object:
    """A deep copy through JSON (the markers are plain strings); a pool value is never shared."""
    return orjson.loads(orjson.dumps(x))


def run_messages(n: int, seed: int) -> Tally:
    tally, per_example = Tally("messages (MQTT/Kafka payloads)"), 2 * BATCH

    @hypothesis_seed(seed)
    @_quiet(n // per_example + 1)
    @given(st.lists(documents, min_size=8, max_size=8), st.lists(field_values, min_size=12, max_size=12),
           st.lists(topics, min_size=6, max_size=6), st.integers(0, 2**32 - 1))
    def example(docs: list, pool: list, topic_pool: list, s: int) -> None:
        rng = Random(s)
        for _ in range(2):
            k = min(BATCH, n - tally.payloads)
            if k <= 0:
                return
            payloads = tuple(vary(docs, pool, rng) for _ in range(k))
            tops = tuple(rng.choice([*topic_pool, None, "plant/north/pump-01/temp"]) for _ in range(k))
            receive = None if rng.random() < 0.3 else tuple(NOW - rng.randrange(10**10) for _ in range(k))
            audit_batch(tally, RawMessages(payloads, tops, tuple(f"fuzz:{i}" for i in range(k))), receive)

    example()
    return tally


def audit_batch(tally: Tally, msgs: RawMessages, receive: tuple[int, ...] | None) -> None:
    out, problems = audit_messages(msgs, receive)
    if len(msgs.payloads) > 1 and any(p.startswith("#* crash:") for p in problems):  # which payloads crash
        for i in range(len(msgs.payloads)):
            one = RawMessages(msgs.payloads[i:i + 1], msgs.topics[i:i + 1], msgs.origins[i:i + 1])
            audit_batch(tally, one, receive[i:i + 1] if receive else None)
        return
    tally.reasons.update(r.reason for r in out.rejects)
    tally.outcomes["readings kept"] += len(out.readings)  # readings, shown beside the payloads
    per = {i: [p for p in problems if p.startswith(f"#{i} ")] for i in range(len(msgs.payloads))}
    batch_wide = [p for p in problems if p.startswith("#* ")]
    for i in range(len(msgs.payloads)):
        tally.count("parsed", per[i] + (batch_wide if i == 0 else []))


# -- files ------------------------------------------------------------------------------------------------------


def vary_file(case: FileCase, rng: Random) -> FileCase:
    """The same file spoiled at the byte level the way real exports are."""
    data, how = case.data, rng.choice(("flip", "flip", "truncate", "utf8", "bom", "encoding", "repeat_column",
                                      "quote", "nul", "line_ends", "empty"))
    at = rng.randrange(len(data) + 1)
    if case.name.endswith(".parquet"):  # corrupt pages or a cut footer
        spoiled = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            if spoiled:
                spoiled[rng.randrange(len(spoiled))] = rng.randrange(256)
        return FileCase(case.name, bytes(spoiled) if how != "truncate" else data[:at])
    if how == "flip":
        data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
    elif how == "truncate":
        data = data[:at]
    elif how in ("utf8", "nul", "quote"):
        data = data[:at] + {"utf8": b"\xff\xfe", "nul": b"\x00", "quote": b'"'}[how] + data[at:]
    elif how == "bom":
        data = b"\xef\xbb\xbf" + data
    elif how == "encoding":
        data = data.decode("utf-8", "replace").encode(rng.choice(("utf-16", "latin-1", "cp1252")), "replace")
    elif how == "repeat_column":
        head, _, rest = data.partition(b"\n")
        cols = re.split(rb"([,;\t|])", head)
        data = b"".join(cols[:3] + [cols[0]] + cols[3:-1]) + b"\n" + rest if len(cols) > 3 else data
    elif how == "line_ends":
        data = data.replace(b"\n", rng.choice((b"\r", b"\r\n", b"\n\n")))
    else:
        data = b""
    return FileCase(case.name, data)


def run_files(n: int, seed: int) -> Tally:
    tally, per_example = Tally("files (CSV / JSONL / Parquet replays)"), 6

    @hypothesis_seed(seed)
    @_quiet(n // per_example + 1)
    @given(st.one_of(csv_files(), csv_files(), jsonl_files(), parquet_files()), st.integers(0, 2**32 - 1))
    def example(case: FileCase, s: int) -> None:
        rng = Random(s)
        for c in [case] + [vary_file(case, rng) for _ in range(per_example - 1)]:
            if tally.payloads >= n:
                return
            opts = {"asset": "plant"} if c.name.endswith(".csv") else {}
            outcome, out, problems = audit_file(c, _DIR, chunk_rows=rng.choice((1, 7, 100_000)), **opts)
            tally.reasons.update(r.reason for r in out.rejects)
            tally.outcomes["readings kept"] += len(out.readings)
            tally.count(f"{c.name.rsplit('.', 1)[1]} {outcome}", problems)

    example()
    return tally


# -- configuration -----------------------------------------------------------------------------------------------


def vary_toml(text: bytes, rng: Random) -> bytes:
    how = rng.choice(("none",) * 6 + ("flip", "flip", "truncate", "utf8", "repeat", "deep"))
    at = rng.randrange(len(text) + 1)
    if how == "flip":
        return text[:at] + bytes([rng.randrange(32, 127)]) + text[at + 1:]
    if how == "truncate":
        return text[:at]
    if how == "utf8":
        return text[:at] + b"\xff" + text[at:]
    if how == "repeat":
        lines = text.splitlines(keepends=True)
        return text + (rng.choice(lines) if lines else b"")
    if how == "deep":
        return text + b"deep = " + b"[" * 1200 + b"]" * 1200 + b"\n"
    return text


def run_configs(n: int, seed: int) -> Tally:
    tally, per_example = Tally("configs (env, TOML file, registry)"), 3

    @hypothesis_seed(seed)
    @_quiet(n // per_example + 1)
    @given(env_sets(), toml_configs(), registries(), st.integers(0, 2**32 - 1))
    def example(env: dict, doc: dict, registry: dict, s: int) -> None:
        rng = Random(s)
        for name, run in (("env", lambda: audit_settings(env)),
                          ("toml", lambda: audit_settings({}, vary_toml(toml_doc(doc), rng))),
                          ("registry", lambda: audit_registry(vary_toml(toml_doc(registry), rng)))):
            if tally.payloads >= n:
                return
            outcome, problems = run()
            tally.count(f"{name} {outcome}", problems)

    example()
    return tally


# -- report ---------------------------------------------------------------------------------------------------------


def report(console: Console, t: Tally) -> None:
    table = Table(title=f"{t.name}: {t.payloads:,} payloads in {t.seconds:.1f} s", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("pinned by the strict xfail")
    for k, v in sorted(t.outcomes.items()):
        table.add_row(k, f"{v:,}")
    for k, v in t.reasons.most_common():
        table.add_row(f"reject: {k}", f"{v:,}")
    table.add_row("[bold]crashed payloads", f"[bold]{t.crashed:,}")
    for k, v in t.crashes.most_common():
        table.add_row(f"  {k}", f"{v:,}", t.pinned[k].split(": ", 1)[-1])
    table.add_row("[bold]unexplained payloads", f"[bold]{t.unexplained:,}")
    for k, v in t.problems.most_common():
        table.add_row(f"  {k}", f"{v:,}", t.pinned[k].split(": ", 1)[-1])
    console.print(table)
    for k, ex in t.examples.items():
        console.print(f"  e.g. {k}: {ex[:150]!r}", highlight=False, markup=False, overflow="ellipsis", no_wrap=True)


def run_hostile_target(n: int, seed: int) -> Tally:
    r = run_hostile(n, seed)
    t = Tally("hostile messages (parse, check, admission, windows)", payloads=r.payloads, crashed=r.crashed,
              unexplained=r.unexplained)
    t.outcomes.update({f"trick: {k}": v for k, v in r.tricks.items()})
    t.reasons.update(r.reasons)
    for kind, example in {**r.crashes, **r.problems}.items():
        t.problems[f"{kind} (new)"] += 1
        t.examples[f"{kind} (new)"] = example
        t.pinned[f"{kind} (new)"] = "NEW"
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=4_000)
    ap.add_argument("--configs", type=int, default=6_000)
    ap.add_argument("--hostile", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    console = Console(width=120)
    ignored: Counter = Counter()  # exceptions raised inside Arrow's callbacks, which Python only prints
    sys.unraisablehook = lambda u: ignored.update(
        [f"{type(u.exc_value).__name__} in {getattr(u.object, '__qualname__', u.object)}"])
    tallies = []
    for run, n in ((run_messages, args.messages), (run_files, args.files), (run_configs, args.configs),
                   (run_hostile_target, args.hostile)):
        t0 = time.perf_counter()
        t = run(n, args.seed)
        t.seconds = time.perf_counter() - t0
        report(console, t)
        for k, v in ignored.items():
            console.print(f"  ignored by Arrow (printed, not raised): {k} x {v}", highlight=False, markup=False)
        ignored.clear()
        tallies.append(t)
    total = sum(t.payloads for t in tallies)
    crashes, unexplained = sum(t.crashed for t in tallies), sum(t.unexplained for t in tallies)
    import resource

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"payloads={total} crashes={crashes} unexplained={unexplained} max_rss_mb={rss_mb:.0f}")


if __name__ == "__main__":
    main()
