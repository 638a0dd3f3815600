"""Twin benchmarks: forecast skill and calibration on real energy series, faults, throughput.

    .venv/bin/python -m benchmarks twin        (exits non-zero when a target is missed)

1. Forecast skill: per-lead MAE (1..24 h) of the twin (fitted by maximum
   likelihood on the first 80 %, then filtering through the held-out last 20 %
   and forecasting from every hour) beside persistence, seasonal naive (same
   hour yesterday) and the direct linear model, and the coverage and width of
   its calibrated 80 % / 95 % intervals, on every series of
   ../shared/data/energy (FR carbon intensity 2023, LCA and direct; Belgian
   day-ahead prices 2022-24 and each year alone). Skipped with a message when
   that folder is absent.
2. Faults on real series: time to flag, time flagged, false alarms per site-week.
3. Throughput: site-updates per second (one predict + one update, n = 6
   states, m = 4 observations) for filterpy's KalmanFilter with one object per
   site, a plain batched numpy Kalman step (the baseline), the engine with
   per-site covariances, and the engine's shared-covariance path, at 1,000 /
   10,000 / 100,000 sites, all measured in this run.
4. FleetTwin ticks per second (simulations' twin of many sites).
5. One site's samples one by one, as telemetry ingest applies them, on a
   realistic stream with and without faults: ``SiteTwin.ingest`` against the
   same equations in bare numpy, the kalman loop and filterpy, in CPU time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filterpy.kalman import KalmanFilter

from federation.model import Site
from twin.fit import backtest
from twin.kalman import BatchKalman
from twin.series import load_series
from twin.ssm import BlockSpec
from twin.telemetry import TelemetrySample

SHARED = Path(
    os.environ.get("CONTINUUM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
FR_FILE = "energy/electricitymaps_FR_2023_hourly.csv"
BE_FILE = "energy/entsoe_BE_dayahead_prices_2022_2024_hourly.csv"
SERIES = (
    # label, file, time column, value column, year (None: the whole file), role
    ("FR carbon LCA 2023", FR_FILE, "Datetime (UTC)", "Carbon Intensity gCO₂eq/kWh (LCA)", None,
     "tuned on"),
    ("BE price 2022-24", BE_FILE, "time", "DAM_price", None, "held out"),
    ("BE price 2022", BE_FILE, "time", "DAM_price", 2022, "held out"),
    ("BE price 2023", BE_FILE, "time", "DAM_price", 2023, "held out"),
    ("BE price 2024", BE_FILE, "time", "DAM_price", 2024, "held out"),
    ("FR carbon direct 2023", FR_FILE, "Datetime (UTC)", "Carbon Intensity gCO₂eq/kWh (direct)",
     None, "same grid"),
)  # fmt: skip
LEADS = (1, 3, 6, 12, 24)
N_STATES, N_OBS = 6, 4


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print(_row(header, widths))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(_row(r, widths))


def _load(rel: str, tcol: str, vcol: str, year: int | None) -> tuple[np.ndarray, np.ndarray]:
    from datetime import UTC, datetime

    s = load_series(SHARED / rel, tcol, vcol)
    if year is None:
        return s.times, s.values
    lo = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    hi = datetime(year + 1, 1, 1, tzinfo=UTC).timestamp()
    keep = (s.times >= lo) & (s.times < hi)
    return s.times[keep], s.values[keep]


def forecast_skill() -> bool:
    """Per-lead MAE of the twin and three baselines, and interval coverage, on every series.

    Targets (issue 13): at every lead the twin's MAE is within 2 % of the better of
    persistence and seasonal naive (or below), over all leads it is below the direct
    linear model, and the 80 % and 95 % intervals cover within 5 points of nominal.
    """
    if not SHARED.is_dir():
        print(f"\nforecast skill: skipped, shared data not found at {SHARED}")
        return True
    ok = True
    summary = []
    for label, rel, tcol, vcol, year, role in SERIES:
        if not (SHARED / rel).exists():
            print(f"forecast skill: {SHARED / rel} missing, {label} skipped")
            continue
        t0 = time.perf_counter()
        t, y = _load(rel, tcol, vcol, year)
        res = backtest(t, y, horizon=24)
        secs = time.perf_counter() - t0
        m = res.mae_by_horizon
        rows = []
        for name in ("twin", "persistence", "seasonal_naive", "linear"):
            rows.append([name, f"{res.mae[name]:.4g}", *(f"{m[name][h - 1]:.4g}" for h in LEADS)])
        c80 = np.array(res.coverage_80)
        c95 = np.array(res.coverage_95)
        rows.append(["coverage 80 %", "", *(f"{c80[h - 1]:.1%}" for h in LEADS)])
        rows.append(["coverage 95 %", "", *(f"{c95[h - 1]:.1%}" for h in LEADS)])
        rows.append(["width 80 %", "", *(f"{res.width_80[h - 1]:.4g}" for h in LEADS)])
        _table(
            f"{label} ({role}): {res.train_samples}/{res.test_samples} h train/test, "
            f"MAE per lead, fit + backtest {secs:.0f} s",
            ["method", "all leads", *(f"lead {h}" for h in LEADS)],
            rows,
        )
        best = np.minimum(m["persistence"], m["seasonal_naive"])
        ratio = np.array(m["twin"]) / best
        worst = int(np.argmax(ratio))
        beats_linear = res.mae["twin"] < res.mae["linear"]
        bad80 = int((np.abs(c80 - 0.80) > 0.05).sum())
        bad95 = int((np.abs(c95 - 0.95) > 0.05).sum())
        good = ratio.max() <= 1.02 and beats_linear and not bad80 and not bad95
        ok &= good
        summary.append(
            [
                label,
                role,
                f"{ratio.max():.3f} (lead {worst + 1})",
                f"{res.mae['twin'] / res.mae['linear']:.3f}",
                f"{c80.min():.1%}..{c80.max():.1%}",
                f"{c95.min():.1%}..{c95.max():.1%}",
                "yes" if good else "NO",
            ]
        )
    _table(
        "forecast targets: twin / best of persistence and seasonal naive <= 1.02 at every lead, "
        "twin / linear < 1 over all leads, coverage within 5 points at every lead",
        ["series", "role", "worst twin/best", "twin/linear", "cov 80 %", "cov 95 %", "met"],
        summary,
    )
    print("forecast targets met on every series:", "yes" if ok else "NO")
    return ok


def faults() -> bool:
    """Fault detection on real series: time to flag, time flagged, false alarms per site-week.

    A carbon-intensity (FR 2023, LCA and direct) or price (BE 2022, 2023, 2024) block
    is fitted on the first 1,500 hours
    (never refitted) and the twin runs over the rest of the series, while an operator
    reviews the site once a day (09:00 UTC) and accepts the new level of any fault
    flagged then: a false alarm costs one such acceptance (without it the first false
    alarm, a real change the model did not expect, would hide every later one). Faults
    are injected into that replay, one at a time, at 12 start hours spread over the
    year, from the state the twin had reached there: a step of ``k`` times the series'
    standard deviation of 24-h changes, left for 4 days, and a stuck sensor (the last
    value repeated) for 4 days; nobody accepts anything while the fault lasts, nor in the
    48 hours after it, which show when the site reads ok again (reported, no target).

    Targets: every 2-sd step and stuck sensor flagged, a step within 3 h and a stuck
    sensor within 12 h, then flagged for at least 95 % of the fault's remaining hours;
    on the clean series at most 0.5 false alarm per site-week and at most 5 % of the
    hours flagged. The share of clean hours flagged when nobody ever accepts is
    reported beside them (no target: a real change stays flagged until an operator
    accepts it, as the issue asks).
    """
    import copy

    from federation.model import load_demo_federation
    from twin.fit import default_spec, fit_block
    from twin.site import SiteTwin, TwinConfig, default_blocks
    from twin.state import SiteStatus
    from twin.telemetry import TelemetrySample

    if not SHARED.is_dir():
        print(f"\nfaults: skipped, shared data not found at {SHARED}")
        return True
    site = load_demo_federation().sites[0]
    config = TwinConfig()  # the defaults: the twin at the site and the service's
    ok = True
    rows = []
    dur = 96
    after = 48  # hours replayed after a fault ends, to see the site read ok again
    review = 9  # the operator's hour (UTC)
    for label, rel, tcol, vcol, year, metric in (
        ("FR carbon 2023", FR_FILE, "Datetime (UTC)", "Carbon Intensity gCO₂eq/kWh (LCA)", None,
         "carbon_intensity"),
        ("BE price 2024", BE_FILE, "time", "DAM_price", 2024, "power_price"),
        ("FR carbon direct 2023", FR_FILE, "Datetime (UTC)", "Carbon Intensity gCO₂eq/kWh (direct)",
         None, "carbon_intensity"),
        ("BE price 2022", BE_FILE, "time", "DAM_price", 2022, "power_price"),
        ("BE price 2023", BE_FILE, "time", "DAM_price", 2023, "power_price"),
    ):  # fmt: skip
        if not (SHARED / rel).exists():
            continue
        t, y = _load(rel, tcol, vcol, year)
        spec = default_spec(metric, y[:1500])
        fitted = fit_block(spec, t[:1500], y[:1500], window=None).spec
        blocks = [b for b in default_blocks(site, {}) if b.name != metric] + [fitted]
        tt, clean = t[1500:], y[1500:]
        day_sd = float(np.nanstd(clean[24:] - clean[:-24]))
        starts = np.linspace(24 * 7, len(clean) - dur - 48, 12).astype(int)

        def replay(
            tw: SiteTwin,
            values: np.ndarray,
            lo: int,
            hi: int,
            operator: bool,
            keep: dict[int, SiteTwin] | None = None,
            tt: np.ndarray = tt,
            metric: str = metric,
        ) -> np.ndarray:
            """Hours ``lo..hi`` of ``values`` into ``tw``; the hours flagged degraded."""
            flags = np.zeros(hi - lo, dtype=bool)
            for k in range(lo, hi):
                if keep is not None and k in keep:
                    keep[k] = copy.deepcopy(tw)  # the twin as the fault finds it
                if np.isfinite(values[k]):
                    tw.ingest(TelemetrySample(site=site.id, timestamp=tt[k], **{metric: values[k]}))
                flags[k - lo] = tw.status(tt[k])[0] is SiteStatus.DEGRADED
                if operator and flags[k - lo] and int(tt[k] // 3600) % 24 == review:
                    tw.accept()
            return flags

        at: dict[int, SiteTwin] = {int(a): SiteTwin(site, {}, config, blocks) for a in starts}
        tw = SiteTwin(site, {}, config, blocks)
        clean_flags = replay(tw, clean, 0, len(clean), True, at)
        weeks = len(clean) / 168
        fa = tw.counters.faults / weeks
        clean_flagged = float(clean_flags.mean())
        alone = SiteTwin(site, {}, config, blocks)
        unaccepted = float(replay(alone, clean, 0, len(clean), False).mean())
        ok &= fa <= 0.5 and clean_flagged <= 0.05
        for kind, size in (("step", 1.0), ("step", 2.0), ("stuck", 0.0)):
            ttf, held, clear, missed = [], [], [], 0
            for a in starts:
                v = clean.copy()
                if kind == "step":
                    v[a : a + dur] += size * day_sd
                else:
                    v[a : a + dur] = v[a]
                seg = replay(copy.deepcopy(at[int(a)]), v, int(a), int(a) + dur + after, False)
                seg, rest = seg[:dur], seg[dur:]
                if not seg.any():
                    missed += 1
                    continue
                first = int(np.argmax(seg))
                ttf.append(first)
                held.append(float(seg[first:].mean()))
                clear.append(int(np.argmin(rest)) if not rest.all() else after + 1)
            limit = 3 if kind == "step" else 12
            good = (
                not missed and max(ttf) <= limit and min(held) >= 0.95
                if kind == "stuck" or size >= 2.0
                else True  # a 1-sd step is reported, not required
            )
            ok &= good
            rows.append(
                [
                    label,
                    f"{kind} {size:g} sd" if kind == "step" else kind,
                    f"{len(starts) - missed}/{len(starts)}",
                    f"{np.median(ttf):.0f} / {max(ttf)}" if ttf else "-",
                    f"{100 * np.mean(held):.1f} % / {100 * min(held):.1f} %" if held else "-",
                    (
                        f"{np.median(clear):.0f} / {max(clear)}"
                        if max(clear) <= after
                        else f"{np.median(clear):.0f} / >{after}"
                    )
                    if clear
                    else "-",
                    f"{fa:.2f} ({tw.counters.faults} in {weeks:.0f} weeks)",
                    f"{100 * clean_flagged:.1f} % ({100 * unaccepted:.1f} %)",
                    "yes" if good else "NO",
                ]
            )
    _table(
        f"fault detection on real series ({dur} h faults, 12 start hours each; step sizes in sd "
        "of the day-to-day change; an operator accepts flags daily except during an injected "
        "fault)",
        [
            "series",
            "fault",
            "flagged",
            "hours to flag med / max",
            "time flagged mean / min",
            "hours to ok after it med / max",
            "false alarms / site-week",
            "clean hours flagged (nobody accepting)",
            "met",
        ],
        rows,
    )
    print(
        "clean-series targets (at most 0.5 false alarm per site-week, 5 % of hours flagged):",
        "met" if ok else "see above",
    )
    print("fault targets met:", "yes" if ok else "NO")
    return ok


def _system(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = np.eye(N_STATES) + 0.01 * rng.standard_normal((N_STATES, N_STATES))
    Q = 1e-3 * np.eye(N_STATES)
    H = rng.standard_normal((N_OBS, N_STATES))
    R = 0.1 * np.eye(N_OBS)
    return A, Q, H, R


def _rate(step: Callable[[], None], sites: int, min_seconds: float) -> float:
    """Site-updates per second of ``step`` (repeated for at least ``min_seconds``)."""
    n = 0
    t0 = time.perf_counter()
    while True:
        step()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n >= 2:
            return n * sites / dt


def _best_rates(
    steps: dict[str, tuple[Callable[[], None], int]], rounds: int = 5, min_seconds: float = 0.2
) -> dict[str, float]:
    """Best rate of each step over ``rounds`` interleaved rounds.

    The machine is shared: interleaving the methods and keeping each one's best
    round compares them under the same conditions rather than under whatever
    load happened to coincide with one of them.
    """
    for step, _ in steps.values():
        step()  # warm-up
    best = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, (step, sites) in steps.items():
            best[name] = max(best[name], _rate(step, sites, min_seconds))
    return best


def throughput(sizes: tuple[int, ...] = (1_000, 10_000, 100_000)) -> bool:
    """Print the throughput table; True when the engine reaches 80 % of the plain baseline."""
    A, Q, H, R = _system()
    rng = np.random.default_rng(1)
    rows = []
    ok = True
    for N in sizes:
        z = rng.standard_normal((N, N_OBS))
        # filterpy: one object per site (measured on up to 2,000 objects: it is linear in sites)
        n_fp = min(N, 2_000)
        kfs = []
        for _ in range(n_fp):
            kf = KalmanFilter(dim_x=N_STATES, dim_z=N_OBS)
            kf.F, kf.Q, kf.H, kf.R = A, Q, H, R
            kfs.append(kf)

        def fp_step(kfs: list[KalmanFilter] = kfs, z: np.ndarray = z) -> None:
            for i, kf in enumerate(kfs):
                kf.predict()
                kf.update(z[i].reshape(N_OBS, 1))

        # plain batched numpy: textbook equations over stacked arrays
        state = {"x": rng.standard_normal((N, N_STATES)), "P": np.tile(np.eye(N_STATES), (N, 1, 1))}

        def plain_step(state: dict[str, np.ndarray] = state, z: np.ndarray = z) -> None:
            x = state["x"] @ A.T
            P = A @ state["P"] @ A.T + Q
            S = H @ P @ H.T + R
            K = P @ H.T @ np.linalg.inv(S)
            x = x + np.matmul(K, (z - x @ H.T)[..., None])[..., 0]
            state["x"], state["P"] = x, (np.eye(N_STATES) - K @ H) @ P

        # engine, per-site covariances (initial covariances differ, so nothing is shared)
        P0 = np.tile(np.eye(N_STATES), (N, 1, 1)) * (1 + rng.random(N))[:, None, None]
        eng = BatchKalman(rng.standard_normal((N, N_STATES)), P0)

        def eng_step(eng: BatchKalman = eng, z: np.ndarray = z) -> None:
            eng.predict(A, Q)
            eng.update(z, H, R)

        # engine, same A, Q, H, R and initial P everywhere: the shared path is taken by itself
        shared = BatchKalman(
            rng.standard_normal((N, N_STATES)), np.tile(np.eye(N_STATES), (N, 1, 1))
        )

        def shared_step(eng: BatchKalman = shared, z: np.ndarray = z) -> None:
            eng.predict(A, Q)
            eng.update(z, H, R)

        rates = _best_rates(
            {
                "filterpy": (fp_step, n_fp),
                "plain": (plain_step, N),
                "engine": (eng_step, N),
                "shared": (shared_step, N),
            }
        )
        r_fp, r_plain, r_eng, r_shared = (
            rates[k] for k in ("filterpy", "plain", "engine", "shared")
        )
        took_shared = shared.shared and not eng.shared
        ratio = r_eng / r_plain
        ok &= ratio >= 0.8 and took_shared
        rows.append(
            [
                f"{N:,}",
                f"{r_fp:,.0f}" + ("" if n_fp == N else f" ({n_fp:,} objs)"),
                f"{r_plain:,.0f}",
                f"{r_eng:,.0f}",
                f"{100 * ratio:.0f} %",
                f"{r_shared:,.0f}" + ("" if took_shared else " (NOT shared)"),
                f"{r_shared / r_fp:,.0f}x",
            ]
        )
    _table(
        f"Kalman throughput, site-updates/s (predict + update, n={N_STATES}, m={N_OBS}), "
        "best of 5 interleaved rounds in this run",
        [
            "sites",
            "filterpy 1 obj/site",
            "plain batched numpy",
            "engine per-site P",
            "engine / plain",
            "engine shared P (auto)",
            "shared / filterpy",
        ],
        rows,
    )
    print(
        "engine >= 80 % of the plain batched baseline and shared path taken:", "yes" if ok else "NO"
    )
    return ok


def fleet(sizes: tuple[int, ...] = (1_000, 10_000, 100_000)) -> None:
    """FleetTwin ticks (predict, masked update, bounds, anomaly window) per second, per site."""
    from twin.fleet import FleetTwin
    from twin.ssm import BlockSpec

    blocks = (
        BlockSpec("utilisation", trend=True, q_level=1e-7, q_trend=1e-14, r=4e-4, lower=0, upper=1),
        BlockSpec("price", ar=True, daily=1, q_level=1e-9, q_ar=1e-8, q_season=1e-11, r=1e-5),
    )
    rng = np.random.default_rng(4)
    rows = []
    for N in sizes:
        ids = [str(i) for i in range(N)]
        complete = FleetTwin(blocks, ids)
        holes = FleetTwin(blocks, ids)
        z = np.column_stack([rng.uniform(0.2, 0.8, N), rng.normal(0.1, 0.01, N)])
        zm = z.copy()
        zm[rng.random(z.shape) < 0.05] = np.nan

        def tick_complete(f: FleetTwin = complete, z: np.ndarray = z) -> None:
            f.step((f.t or 0.0) + 3600.0, z)

        def tick_holes(f: FleetTwin = holes, z: np.ndarray = zm) -> None:
            f.step((f.t or 0.0) + 3600.0, z)

        rates = _best_rates({"complete": (tick_complete, N), "holes": (tick_holes, N)}, rounds=3)
        rows.append(
            [
                f"{N:,}",
                f"{complete.model.dim}",
                f"{rates['complete']:,.0f}" + (" (shared P)" if complete.shared else ""),
                f"{rates['holes']:,.0f}" + ("" if holes.shared else " (per-site P)"),
            ]
        )
    _table(
        "FleetTwin site-ticks/s (predict, masked update, bounds, NIS window), this run",
        ["sites", "states", "complete data", "5 % of values missing"],
        rows,
    )


def site_stream(
    train: int = 1500, seed: int = 7
) -> tuple[Site, list[BlockSpec], list[TelemetrySample], int]:
    """A realistic telemetry stream of the demo GPU centre (21 states, 4 metrics).

    Carbon intensity: the real FR 2023 series; power price: the real Belgian day-ahead
    price of 2023 on the same hours; utilisation and queued work: a daily cycle with
    weekends and autocorrelated noise (as the demo telemetry); about 3 % of the cells
    missing, as collectors drop them. Each block is fitted by maximum likelihood on the
    first ``train`` hours, so the stream is what the twin was fitted for (no fault in
    it; a false alarm of the twin is counted). Returns ``(site, blocks, stream, train)``.
    """
    from federation.model import load_demo_federation
    from twin.fit import fit_block
    from twin.site import default_blocks

    site = load_demo_federation().site("gpu-centre")
    t, carbon = _load(FR_FILE, "Datetime (UTC)", "Carbon Intensity gCO₂eq/kWh (LCA)", None)
    _, price = _load(BE_FILE, "time", "DAM_price", 2023)
    n = min(len(t), len(price))
    t, carbon, price = t[:n], carbon[:n], price[:n]
    rng = np.random.default_rng(seed)
    hod = (t // 3600) % 24
    weekend = ((t // 86400 + 3) % 7) >= 5  # 1970-01-01 was a Thursday

    def ar1(phi: float, sd: float) -> np.ndarray:
        e = rng.standard_normal(n) * sd * np.sqrt(1 - phi**2)
        out = np.zeros(n)
        for k in range(1, n):
            out[k] = phi * out[k - 1] + e[k]
        return out

    util = np.clip(
        0.55 + 0.25 * np.sin(2 * np.pi * (hod - 9) / 24) - 0.15 * weekend + ar1(0.8, 0.05),
        0.02,
        0.98,
    )
    backlog = np.maximum(
        0.0, (util - 0.7) * site.cores * 3600 * 2 + ar1(0.7, 0.05 * site.cores * 3600)
    )
    values = {
        "utilisation": util,
        "backlog": backlog,
        "power_price": price,
        "carbon_intensity": carbon,
    }
    keep = {k: (rng.random(n) >= 0.03) & np.isfinite(v) for k, v in values.items()}
    blocks = [
        fit_block(b, t[:train], np.where(keep[b.name], values[b.name], np.nan)[:train]).spec
        for b in default_blocks(site, {})
    ]
    stream = [
        TelemetrySample(
            site=site.id,
            timestamp=float(t[k]),
            **{m: float(v[k]) for m, v in values.items() if keep[m][k]},
        )
        for k in range(n)
    ]
    return site, blocks, stream, train


def _with_faults(stream: list[TelemetrySample], every: int = 400) -> list[TelemetrySample]:
    """``stream`` with a fault every ``every`` hours, 24 h each: carbon intensity stepped up by
    150 g, or the power price stuck at its last value (alternately)."""
    out = list(stream)
    for i, a in enumerate(range(every, len(out) - 24, every)):
        for k in range(a, a + 24):
            s = out[k]
            if i % 2 == 0 and s.carbon_intensity is not None:
                out[k] = s.model_copy(update={"carbon_intensity": s.carbon_intensity + 150.0})
            elif i % 2 == 1 and s.power_price is not None:
                out[k] = s.model_copy(update={"power_price": out[a - 1].power_price})
    return out


def _ingest_costs(
    site: Site,
    blocks: list[BlockSpec],
    warm: list[TelemetrySample],
    stream: list[TelemetrySample],
    rounds: int,
) -> tuple[dict[str, float], int]:
    """us of CPU per sample of each method on ``stream`` (best of ``rounds`` interleaved
    rounds), from the twin's estimate after ``warm``; and the faults the twin flagged."""
    from twin.kalman import predict, update
    from twin.site import SiteTwin

    first = SiteTwin(site, {}, None, blocks)
    for smp in warm:
        first.ingest(smp)
    model = first.model
    assert first.x is not None
    assert first.P is not None
    x0, P0, t0 = first.x.copy(), first.P.copy(), float(first.t or 0.0)
    names = model.observations
    vals = np.array([[smp.observed().get(n, np.nan) for n in names] for smp in stream])
    keep = np.isfinite(vals)
    times = np.array([smp.timestamp for smp in stream])
    r_diag = model.R.diagonal()
    D, lo, hi = model.constraints()
    lo_l, hi_l = lo.tolist(), hi.tolist()
    snapshot = first.to_state()
    # an operator reviews the site once a day and accepts what is flagged, as in ``faults``
    # (a false alarm left open would have the twin follow a reference to the end)
    reviews = [int(tk // 3600) % 24 == 9 for tk in times]

    def run_site() -> SiteTwin:
        tw = SiteTwin.from_state(site, {}, first.config, snapshot)
        for smp, review in zip(stream, reviews, strict=True):
            tw.ingest(smp)
            if review and tw.fault is not None:
                tw.accept()  # the operator's daily review (see ``faults``)
        return tw

    def run_filterpy() -> None:
        kf = KalmanFilter(dim_x=model.dim, dim_z=len(names))
        kf.x, kf.P, t = x0.reshape(-1, 1).copy(), P0.copy(), t0
        for k, tk in enumerate(times):
            kf.F, kf.Q = model.transition(tk - t)
            kf.predict()
            rows = np.flatnonzero(keep[k])  # the sample's mask, as it arrives
            if len(rows):
                kf.update(
                    vals[k, rows].reshape(-1, 1), R=model.R[np.ix_(rows, rows)], H=model.H[rows]
                )
            t = tk

    def textbook(bounded: bool) -> None:
        """The textbook equations inline (S inverted); ``bounded``: then the model's bounds,
        the estimate projected onto ``lo <= D x <= hi`` in the ``P^-1`` metric (Simon and
        Chia) when it left them (one bound, the usual case: ``x - P d (d x - b) / (d P d)``,
        without a solve)."""
        x, P, t = x0.copy(), P0.copy(), t0
        for k, tk in enumerate(times):
            A, Q = model.transition(tk - t)
            x = A @ x
            P = A @ P @ A.T + Q
            rows = np.flatnonzero(keep[k])  # the sample's mask, as it arrives
            if len(rows):
                H, R = model.H[rows], model.R[np.ix_(rows, rows)]
                y = vals[k, rows] - H @ x
                PHT = P @ H.T
                K = PHT @ np.linalg.inv(H @ PHT + R)
                x = x + K @ y
                P = P - K @ PHT.T
                P = 0.5 * (P + P.T)
            t = tk
            if not bounded:
                continue
            v = (D @ x).tolist()  # three numbers: compared in Python, cheaper than numpy
            out = [i for i, a in enumerate(v) if a < lo_l[i] or a > hi_l[i]]
            if len(out) == 1:  # one bound violated: the rank-one correction, no solve
                i = out[0]
                d = D[i]
                Pd = P @ d
                x = x - Pd * ((v[i] - min(max(v[i], lo_l[i]), hi_l[i])) / (d @ Pd))
            elif out:  # the violated bounds become equalities
                Da = D[out]
                da = np.clip(np.array(v)[out], lo[out], hi[out])
                x = x - P @ Da.T @ np.linalg.solve(Da @ P @ Da.T, Da @ x - da)

    def run_bare() -> None:
        textbook(bounded=False)

    def run_bounded() -> None:
        textbook(bounded=True)

    def run_diag() -> None:
        """The twin's arithmetic inline: diagonal S, and the NIS it tests."""
        x, P, t = x0.copy(), P0.copy(), t0
        for k, tk in enumerate(times):
            A, Q = model.transition(tk - t)
            x = A @ x
            P = A @ P @ A.T + Q
            rows = np.flatnonzero(keep[k])  # the sample's mask, as it arrives
            if len(rows):
                H = model.H[rows]
                y = vals[k, rows] - H @ x
                PHT = P @ H.T
                s = (H @ PHT).diagonal() + r_diag[rows]
                K = PHT / s
                x = x + K @ y
                P = P - K @ PHT.T
                P = 0.5 * (P + P.T)
                _ = float(y @ (y / s))
            t = tk

    def run_loop() -> None:
        """``twin.kalman.predict`` / ``update`` on one site: the one filter loop, alone."""
        x, P, t = x0.copy(), P0.copy(), t0
        for k, tk in enumerate(times):
            A, Q = model.transition(tk - t)
            x, P = predict(x, P, A, Q)
            x, P, _ = update(x, P, vals[k], model.H, model.R, keep[k], True, diagonal=True)
            t = tk

    names_ = ("filterpy", "bare", "bounded", "diag", "loop", "site")
    fns: tuple[Callable[[], object], ...] = (
        run_filterpy,
        run_bare,
        run_bounded,
        run_diag,
        run_loop,
        run_site,
    )
    best = dict.fromkeys(names_, np.inf)
    for fn in fns:
        fn()  # warm-up (and the transitions of every interval in the cache)
    for _ in range(rounds):  # interleaved rounds, best of each
        for name, fn in zip(names_, fns, strict=True):
            c0 = time.process_time()
            fn()
            best[name] = min(best[name], (time.process_time() - c0) / len(stream) * 1e6)
    return best, run_site().counters.faults


def single_site_ingest(samples: int = 4_000, rounds: int = 5) -> bool:
    """One site's telemetry, sample after sample (what the API's ingest and the site agent
    run), per sample, on the realistic stream of ``site_stream`` (after its training
    hours) and on the same stream with faults in it.

    Measured the same way in the same run, interleaved, best of ``rounds``, in CPU time
    of this process (``time.process_time``: the machine is shared, so the time other jobs
    take the core is left out):

    * filterpy's ``KalmanFilter`` (predict, then update with the reduced ``H`` and ``R``);
    * bare numpy, textbook: the filter's equations inline, ``S`` inverted;
    * bare numpy, textbook with the bounds: the same, then the estimate projected onto
      the model's bounds when it left them (the twin's model is constrained: a queue
      is never negative, utilisation stays in [0, 1]); the same equations as the twin's;
    * bare numpy, diagonal ``S``: inline again, with the twin's arithmetic (``S`` is
      diagonal, so ``S^-1`` is ``1 / s``) and the innovation statistic the twin tests;
      the floor for one site in Python;
    * ``twin.kalman.predict``/``update`` in a loop (the one filter loop, alone);
    * ``SiteTwin.ingest``: the loop plus reading the sample, the bounds, the innovation
      window, the jump and stuck-sensor tests and, in a fault, the reference estimate;
      an operator reviews the site once a day and accepts what is flagged, as in
      ``faults`` (the clean stream's false alarms, BE price moves, then last hours, not
      the rest of the stream).

    Targets: the loop within 10 % of bare numpy with the diagonal ``S``, and
    ``SiteTwin.ingest`` within 10 % of the textbook bare-numpy equations with the bounds
    (issue 19). Its ratio to the equations without the bounds is printed beside.
    """
    if not SHARED.is_dir():
        print(f"\nsingle-site ingest: skipped, shared data not found at {SHARED}")
        return True
    site, blocks, full, train = site_stream()
    ok = True
    rows = []
    for label, stream in (
        ("no fault", full[train : train + samples]),
        ("faults", _with_faults(full)[train : train + samples]),
    ):
        best, faults = _ingest_costs(site, blocks, full[:train], stream, rounds)
        loop_ratio = best["loop"] / best["diag"]
        site_ratio = best["site"] / best["bounded"]
        if label == "no fault":
            ok &= loop_ratio <= 1.1 and site_ratio <= 1.1
        rows.append(
            [
                label,
                f"{faults}",
                *(
                    f"{best[n]:.1f}"
                    for n in ("filterpy", "bare", "bounded", "diag", "loop", "site")
                ),
                f"{loop_ratio:.2f}",
                f"{site_ratio:.2f}",
                f"{best['site'] / best['bare']:.2f}",
                f"{best['site'] / best['diag']:.2f}",
            ]
        )
    _table(
        f"one site's samples one by one ({len(blocks)} metrics, 21 states, real FR carbon and BE "
        f"price, 3 % missing), {samples:,} samples after {train:,} h of training, us of CPU per "
        f"sample, best of {rounds} interleaved rounds in this run; load {os.getloadavg()[0]:.1f}",
        [
            "stream",
            "faults flagged",
            "filterpy",
            "bare numpy (inv S)",
            "bare numpy + bounds",
            "bare numpy (diag S)",
            "kalman loop",
            "SiteTwin.ingest",
            "loop / diag",
            "SiteTwin / bare + bounds",
            "SiteTwin / bare",
            "SiteTwin / diag",
        ],
        rows,
    )
    print(
        "fault-free stream: the kalman loop within 10 % of bare numpy with the diagonal S, "
        "SiteTwin.ingest within 10 % of the textbook bare-numpy equations with the bounds:",
        "yes" if ok else "NO",
    )
    return ok


def main() -> None:
    ok = forecast_skill()
    ok &= faults()
    ok &= throughput()
    fleet()
    ok &= single_site_ingest()
    if not ok:
        raise SystemExit("twin benchmark: a target was missed (see the tables above)")


if __name__ == "__main__":
    main()
