"""The `smart-maintenance` command line: one typer app, one module per command family.

    run, replay, publish       cli/run.py        the flow, and load for it
    db, status                 cli/status.py     what is stored, how a running job is
    review ...                 cli/review.py     the human review queue
    log-maintenance            cli/maintenance.py completed work, closing the loop
    ask, incidents ...         cli/incidents.py  the incident memory
    report                     cli/report.py     the HTML report
    train-rul                  cli/train.py      learned remaining-useful-life models
    serve, keys ...            cli/serve.py, cli/keys.py  the HTTP API and web UI, and their API keys
    assets list|admit          cli/assets.py     unknown assets out of quarantine
    whatif                     cli/whatif.py     candidate settings replayed on the stored history
    cmms preview|sync          cli/cmms.py       the CMMS hand-off: a work order's request, completions now
"""

from __future__ import annotations

import os

import typer

from smart_maintenance.cli import (
    assets,
    cmms,
    incidents,
    keys,
    maintenance,
    report,
    review,
    run,
    serve,
    status,
    train,
    whatif,
)
from smart_maintenance.cli.common import say

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # help texts name settings sections like [mqtt]: print them as written
    help="Streaming predictive maintenance on Bytewax.",
)

app.command()(run.run)
app.command()(run.replay)
app.command()(run.publish)
app.command()(status.db)
app.command()(status.status)
app.add_typer(review.review_app, name="review")
app.command("log-maintenance")(maintenance.log_maintenance)
app.command()(incidents.ask)
app.add_typer(incidents.incidents_app, name="incidents")
app.command("report")(report.report_command)
app.command("train-rul")(train.train_rul_command)
app.command("serve")(serve.serve)
app.add_typer(keys.keys_app, name="keys")
app.add_typer(assets.assets_app, name="assets")
app.command("whatif")(whatif.whatif)
app.add_typer(cmms.cmms_app, name="cmms")


def main() -> None:
    from smart_maintenance.config.registry import RegistryError
    from smart_maintenance.connectors.postgres.server import PostgresSinkError
    from smart_maintenance.logs import configure_logging
    from smart_maintenance.sources.formats import ReplayError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging()
    try:
        app(standalone_mode=True)
    except (PostgresSinkError, ReplayError, RegistryError) as e:
        say(e, "error: ", "red")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
