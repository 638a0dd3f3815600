"""CLI commands and the demo section of the twin package.

``continuum twin fit TELEMETRY.csv``       fit each site's model by maximum likelihood
``continuum twin view TELEMETRY.csv``      replay telemetry, print the planners' view
``continuum twin backtest CSV ...``        forecast skill of the twin on any hourly series
``continuum twin probe``                   real telemetry of this machine (from /proc)
``continuum twin accept SITE``             accept a site's new level after a fault (API)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from federation.cli.common import DemoContext, console, err_console, write_json

if TYPE_CHECKING:  # the commands import what they use when they run: `--help` stays fast
    from rich.table import Table

    from federation.model import Federation
    from twin import AbstractSiteState, BlockSpec

twin_app = typer.Typer(
    name="twin",
    help="Digital twin: fit, replay, backtest, probe, accept a new level.",
    no_args_is_help=True,
)

DEMO_TELEMETRY = "telemetry/synthetic-demo-telemetry.csv"

FederationOpt = Annotated[
    Path | None,
    typer.Option("--federation", "-f", help="Federation YAML (default: the demo federation)."),
]
JsonOpt = Annotated[
    Path | None,
    typer.Option("--json", help="Also write the result as JSON ('-': stdout, tables on stderr)."),
]


def _human(json_out: Path | None) -> Any:
    """Where the tables go: stderr when the JSON takes stdout (``--json -``), else stdout."""
    return err_console if json_out is not None and str(json_out) == "-" else console


def _federation(path: Path | None) -> Federation:
    from federation.model import load_demo_federation, load_federation

    return load_federation(path) if path is not None else load_demo_federation()


def _load_params(path: Path | None) -> dict[str, list[BlockSpec]] | None:
    from federation.documents import read_document
    from federation.errors import InvalidInput
    from twin import BlockSpec

    if path is None:
        return None
    data = read_document(path)  # bounded; InvalidInput (exit 2) names the file
    try:
        return {
            sid: [BlockSpec(**b) for b in entry["blocks"]] for sid, entry in data["sites"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput.single(
            str(path), "sites", f"not a 'continuum twin fit --json' output: {exc}"
        ) from None


def fit(
    telemetry: Annotated[Path, typer.Argument(help="Telemetry CSV/JSON (timestamp, site, ...).")],
    federation: FederationOpt = None,
    window: Annotated[int, typer.Option(help="Fit on the last N samples of each site.")] = 1500,
    output: JsonOpt = None,
) -> None:
    """Fit each site's noise intensities and time constants by maximum likelihood.

    Prints, per site and metric, the samples used and the log-likelihood before
    and after; --json writes the fitted blocks (reusable with ``twin view --params``).
    """
    from rich.table import Table

    from twin import fit_sites, read_telemetry

    out = _human(output)
    fed = _federation(federation)
    samples = read_telemetry(telemetry)
    t0 = time.perf_counter()
    fits = fit_sites(fed, samples, window=window)
    table = Table(title=f"maximum-likelihood fit of {telemetry.name} ({len(samples)} samples)")
    for col in ("site", "metric", "samples", "loglik before", "loglik after", "obs sd", "evals"):
        table.add_column(col, justify="left" if col in ("site", "metric") else "right")
    for sid, f in fits.items():
        for name, rep in f.reports.items():
            table.add_row(
                sid,
                name,
                str(rep.samples),
                f"{rep.initial_loglik:.1f}",
                f"{rep.loglik:.1f}",
                f"{math.sqrt(rep.spec.r):.4g}",
                str(rep.evaluations),
            )
    out.print(table)
    out.print(f"fitted {len(fits)} site(s) in {time.perf_counter() - t0:.1f} s")
    if output is not None:
        write_json(
            {
                "federation": fed.name,
                "sites": {
                    sid: {
                        "blocks": [asdict(b) for b in f.blocks],
                        "loglik": {k: r.loglik for k, r in f.reports.items()},
                    }
                    for sid, f in fits.items()
                },
            },
            output,
        )
        out.print(f"fitted parameters written to {output}")


def view_table(view: dict[str, AbstractSiteState], title: str, ahead: int = 24) -> Table:
    """The planners' view as a table: now and ``ahead`` slots later (kept whole on the page)."""
    from federation.cli.common import Column, fitted_table

    rows = []
    for sid, st in view.items():
        k = min(ahead, st.horizon - 1)
        ac = st.available_cores

        def pair(fc: Any, fmt: str, k: int = k) -> str:
            if fc is None:
                return "withheld"
            return f"{fc.mean[0]:{fmt}} / {fc.mean[k]:{fmt}} ± {fc.std[k]:{fmt}}"

        rows.append(
            {
                "site": sid,
                "status": st.status.value,
                "health": f"{st.health:.2f}",
                "now": f"{ac.mean[0]:.0f} ± {ac.std[0]:.0f}",
                "later": f"{ac.mean[k]:.0f} ± {ac.std[k]:.0f}",
                "wait": f"{st.expected_wait_s:.0f} s",
                "price": pair(st.power_price, ".3f"),
                "carbon": pair(st.carbon_intensity, ".0f"),
            }
        )
    columns = [
        Column("site", "site", rank=0, left=True),
        Column("status", "status", rank=0, left=True),
        Column("health", "health", rank=2),
        Column("free cores\nnow", "now", rank=0),
        Column(f"free cores\n+{ahead}h", "later", rank=1),
        Column("wait", "wait", rank=2),
        Column(f"EUR/kWh\nnow / +{ahead}h", "price", rank=1),
        Column(f"gCO2e/kWh\nnow / +{ahead}h", "carbon", rank=1),
    ]
    return fitted_table(title, columns, rows)


def view(
    telemetry: Annotated[Path, typer.Argument(help="Telemetry CSV/JSON to replay.")],
    federation: FederationOpt = None,
    params: Annotated[
        Path | None, typer.Option(help="Fitted parameters from 'continuum twin fit --json'.")
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="SQLite file: resume from and save the twin's estimate.")
    ] = None,
    output: JsonOpt = None,
) -> None:
    """Replay telemetry into the federation twin and print the view the planners get."""
    from federation.store import Store
    from twin import FederationTwin, read_telemetry, replay

    out = _human(output)
    fed = _federation(federation)
    samples = read_telemetry(telemetry)
    db = Store.at(store) if store is not None else None
    twin = FederationTwin(fed, params=_load_params(params), store=db)
    if twin.resumed:
        out.print(f"resumed {len(twin.resumed)} site estimate(s) from {store}")
    totals: dict[str, int] = {}
    for batch in replay(samples):
        rep = twin.ingest(batch)
        for k, v in rep.to_dict().items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
        for sid, flag in rep.flagged.items():
            out.print(f"  {time.strftime('%F %T', time.gmtime(batch[-1].timestamp))} {sid}: {flag}")
    now = max((s.timestamp for s in samples), default=time.time())
    v = twin.view(now=now)
    out.print(view_table(v, f"twin view at {time.strftime('%F %T UTC', time.gmtime(now))}"))
    out.print("samples: " + ", ".join(f"{k} {n}" for k, n in totals.items()))
    if db is not None:
        twin.snapshot()
        out.print(f"estimates saved to {store}")
    if output is not None:
        write_json({sid: st.model_dump(mode="json") for sid, st in v.items()}, output)


def backtest_cmd(
    csv: Annotated[Path, typer.Argument(help="A CSV with an hourly series.")],
    time_column: Annotated[str, typer.Option("--time-column", help="Column of timestamps.")],
    value_column: Annotated[str, typer.Option("--value-column", help="Column of values.")],
    horizon: Annotated[int, typer.Option(help="Lead times forecast from each origin.")] = 24,
    test_fraction: Annotated[float, typer.Option(help="Held-out last part.")] = 0.2,
    window: Annotated[
        int | None,
        typer.Option(help="Fit on the last N samples before the held-out part (default: all)."),
    ] = None,
    output: JsonOpt = None,
) -> None:
    """Fit on the first part of an hourly series, forecast the held-out rest horizon by horizon.

    Compares the twin's mean absolute error with persistence (last value),
    seasonal naive (same hour the day before) and a direct linear model per lead,
    and reports how often the held-out values fall inside the twin's 80 % and
    95 % intervals.
    """
    from rich.table import Table

    from federation.errors import InvalidInput
    from twin import backtest, load_series
    from twin.errors import ModelError

    out = _human(output)
    series = load_series(csv, time_column, value_column)
    try:
        res = backtest(
            series.times, series.values, horizon=horizon, test_fraction=test_fraction, window=window
        )
    except ModelError as exc:
        raise InvalidInput.single(str(csv), f"column {value_column!r}", str(exc)) from None
    table = Table(
        title=f"{value_column}: {horizon}-step-ahead MAE on the held-out last {test_fraction:.0%}"
    )
    table.add_column("method")
    table.add_column("MAE (all leads)", justify="right")
    for h in sorted({1, min(6, horizon), min(12, horizon), horizon}):
        table.add_column(f"lead {h}", justify="right")
    best = min(res.mae, key=lambda k: res.mae[k])
    for name, mae in res.mae.items():
        leads = sorted({1, min(6, horizon), min(12, horizon), horizon})
        table.add_row(
            name + (" (best)" if name == best else ""),
            f"{mae:.4g}",
            *(f"{res.mae_by_horizon[name][h - 1]:.4g}" for h in leads),
        )
    out.print(table)
    cov = Table(title="the twin's calibrated intervals on the held-out part")
    cov.add_column("")
    leads = sorted({1, min(6, horizon), min(12, horizon), horizon})
    for h in leads:
        cov.add_column(f"lead {h}", justify="right")
    for label, values, fmt in (
        ("coverage 80 %", res.coverage_80, ".1%"),
        ("coverage 95 %", res.coverage_95, ".1%"),
        ("width 80 %", res.width_80, ".4g"),
        ("width 95 %", res.width_95, ".4g"),
    ):
        cov.add_row(label, *(f"{values[h - 1]:{fmt}}" for h in leads))
    out.print(cov)
    out.print(
        f"{series.rows} rows, {len(series)} hourly slots ({series.missing} gaps, "
        f"{series.duplicates} duplicated hours averaged); trained on {res.train_samples}, "
        f"{res.origins} forecast origins"
    )
    if output is not None:
        write_json({"source": str(csv), "column": value_column, **res.to_dict()}, output)


def probe(
    site: Annotated[str, typer.Option(help="Site id to put on the samples.")] = "local",
    samples: Annotated[int, typer.Option(help="Number of samples.")] = 3,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 1.0,
) -> None:
    """Print real telemetry of this machine (utilisation and queued work from /proc)."""
    from federation.errors import InvalidInput
    from twin import LocalProbe

    pr = LocalProbe(site)
    if not pr.available():
        raise InvalidInput.single("/proc", "", "no /proc/stat here: the probe needs Linux")
    pr.sample()
    for _ in range(samples):
        time.sleep(interval)
        s = pr.sample()
        console.print(
            f"{time.strftime('%T', time.gmtime(s.timestamp))} site={s.site} "
            f"utilisation={s.utilisation if s.utilisation is None else round(s.utilisation, 3)} "
            f"backlog={s.backlog:.1f} core-s ({pr.cores} cores)"
        )


def accept(
    site: Annotated[str, typer.Argument(help="The site whose new level is accepted.")],
    server: Annotated[str, typer.Option(help="The federation API, e.g. https://fed.example.org")],
    token: Annotated[
        str,
        typer.Option(envvar="CONTINUUM_TOKEN", help="Bearer token (site-operator of SITE)."),
    ],
) -> None:
    """Accept a site's new level after a fault: its twin stops flagging it degraded.

    A step change that is real or a replaced sensor: the twin keeps the site
    degraded until the site recovers or an operator accepts. For a site whose
    twin runs at the site (site-agent --telemetry), the request reaches it with
    the answer to its next state push.
    """
    import httpx

    from federation.errors import InvalidInput

    try:
        r = httpx.post(
            f"{server.rstrip('/')}/api/v1/sites/{site}/state/accept",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise InvalidInput.single(server, "", f"cannot reach the federation API: {exc}") from None
    if not r.is_success:
        raise InvalidInput.single(server, f"site {site!r}", f"{r.status_code}: {r.text}")
    body = r.json()
    if not body["accepted"]:
        console.print(f"{site}: no open fault, nothing to accept")
    elif body["where"] == "site":
        console.print(f"{site}: accepted; the site's twin applies it at its next state push")
    else:
        console.print(f"{site}: accepted; the twin no longer flags it")


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    twin_app.command("fit")(fit)
    twin_app.command("view")(view)
    twin_app.command("backtest")(backtest_cmd)
    twin_app.command("probe")(probe)
    twin_app.command("accept")(accept)
    app.add_typer(twin_app, name="twin")


def _plot(
    path: Path,
    fed: Federation,
    history: dict[str, dict[str, list[tuple[float, float]]]],
    forecasts: dict[str, Any],
    issued: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = (
        ("utilisation", "utilisation", 1.0),
        ("power_price", "EUR/kWh", 1.0),
        ("carbon_intensity", "gCO2e/kWh", 1.0),
    )
    fig, axes = plt.subplots(len(fed.sites), 3, figsize=(15, 2.6 * len(fed.sites)), sharex=True)
    for i, site in enumerate(fed.sites):
        fc = forecasts[site.id]
        for j, (name, unit, _) in enumerate(metrics):
            ax = axes[i][j]
            pts = history[site.id].get(name, [])
            th = [(t - issued) / 3600 for t, _ in pts]
            ax.plot(th, [v for _, v in pts], ".", ms=2.5, color="0.3", label="observed")
            block = fc.blocks[name]
            tf = [(k + 0.5) * fc.slot_seconds / 3600 for k in range(len(block.mean))]
            mean = np.array(block.mean)
            sd = np.array(block.std)
            ax.plot(tf, mean, color="tab:blue", label="forecast")
            ax.fill_between(tf, mean - 2 * sd, mean + 2 * sd, color="tab:blue", alpha=0.2,
                            label="±2 sd")  # fmt: skip
            ax.axvline(0, color="tab:red", lw=0.8)
            ax.set_ylabel(unit)
            if i == 0:
                ax.set_title(name)
            if j == 0:
                ax.annotate(site.id, (0.01, 0.85), xycoords="axes fraction", fontsize=9)
    axes[-1][1].set_xlabel("hours from forecast issue (red line); SYNTHETIC telemetry")
    axes[0][0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def demo_section(ctx: DemoContext) -> None:
    """The twin part of ``continuum demo``: replay synthetic telemetry, forecast, plot, view."""
    import numpy as np
    from rich.table import Table

    from federation.cli.core import examples_dir
    from twin import FederationTwin, read_telemetry, replay

    fed = ctx.federation
    console.rule("[bold]digital twin")
    path = examples_dir() / DEMO_TELEMETRY
    samples = read_telemetry(path)
    known = set(fed.site_ids)
    samples = [s for s in samples if s.site in known]
    if not samples:
        console.print(f"no telemetry for these sites in {path}: static view used")
        from twin import static_view

        ctx.results["view"] = static_view(fed)
        return
    end = max(s.timestamp for s in samples)
    cut = end - 24 * 3600  # hold out the last day to compare the forecast with it
    twin = FederationTwin(fed)
    for batch in replay([s for s in samples if s.timestamp <= cut]):
        twin.ingest(batch)
    forecasts = {sid: twin.forecast(sid) for sid in twin.sites}
    issued = max(tw.t or cut for tw in twin.sites.values())
    history: dict[str, dict[str, list[tuple[float, float]]]] = {sid: {} for sid in twin.sites}
    for s in samples:
        if s.timestamp >= cut - 3 * 86400:
            for k, v in s.observed().items():
                history[s.site].setdefault(k, []).append((s.timestamp, v))
    # held-out error of the 1-24 h forecasts, per site and metric
    held: dict[str, dict[str, float]] = {}
    for sid, fc in forecasts.items():
        held[sid] = {}
        for name in ("utilisation", "power_price", "carbon_intensity"):
            errs = []
            for t, v in history[sid].get(name, []):
                slot = int((t - issued) / fc.slot_seconds)
                if t > issued and slot < len(fc.blocks[name].mean):
                    errs.append(abs(fc.blocks[name].mean[slot] - v))
            if errs:
                held[sid][name] = float(np.mean(errs))
    png = ctx.output / "twin-forecast.png"
    _plot(png, fed, history, forecasts, issued)
    for batch in replay([s for s in samples if s.timestamp > cut]):
        twin.ingest(batch)
    view = twin.view(now=end)
    console.print(
        f"replayed {len(samples)} SYNTHETIC samples from {path.name} "
        f"({len(twin.sites)} sites, hourly, {int((end - samples[0].timestamp) / 86400) + 1} days)"
    )
    console.print(view_table(view, "twin view (48 hourly slots) handed to the planners"))
    mae = Table(title="held-out last day: MAE of the twin's 1-24 h forecasts")
    for col in ("site", "utilisation", "EUR/kWh", "gCO2e/kWh"):
        mae.add_column(col, justify="left" if col == "site" else "right")
    for sid, d in held.items():
        mae.add_row(
            sid,
            *(
                f"{d[k]:.3g}" if k in d else "-"
                for k in ("utilisation", "power_price", "carbon_intensity")
            ),
        )
    console.print(mae)
    console.print(f"forecast plot (mean, ±2 sd band, observed) written to {png}")
    ctx.results["view"] = view
    ctx.results["twin"] = twin
    ctx.results.setdefault("summary", {})["twin"] = {
        "telemetry": path.name,
        "samples": len(samples),
        "issued_at": end,
        "status": {sid: st.status.value for sid, st in view.items()},
        "available_cores_now": {sid: st.available_cores.mean[0] for sid, st in view.items()},
        "held_out_mae": held,
        "plot": str(png),
    }
