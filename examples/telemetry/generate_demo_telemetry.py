"""Generate SYNTHETIC hourly telemetry for the demo federation (seeded, reproducible).

    .venv/bin/python examples/telemetry/generate_demo_telemetry.py [OUT.csv] [--days 14]

Nothing here is measured: every series is a daily cycle around the site's
nominal figures in federation/examples/demo.yaml, plus autocorrelated noise
and about 3 % missing cells (to exercise masked updates):

* utilisation: 0.55 +- 0.25 over the day (peak in the afternoon), weekends 0.15 lower;
* backlog: core-seconds queued, rising when utilisation is above 0.7;
* power price: nominal x (1 + 0.25 daily + 0.08 half-daily), weekends 15 % cheaper;
* carbon intensity: nominal x (1 + 0.2 daily), evening peak;
* link throughput: 40 % of the link's bandwidth +- 30 % over the day.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from federation.model import Federation, load_demo_federation
from twin.telemetry import TelemetrySample, write_telemetry_csv

START = 1_767_571_200.0  # 2026-01-05 00:00:00 UTC, a Monday
SEED = 20_260_105
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "synthetic-demo-telemetry.csv"


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """An AR(1) noise series with stationary standard deviation ``sd``."""
    e = rng.standard_normal(n) * sd * math.sqrt(1 - phi**2)
    out = np.empty(n)
    out[0] = rng.standard_normal() * sd
    for k in range(1, n):
        out[k] = phi * out[k - 1] + e[k]
    return out


def generate(federation: Federation, days: int = 14, seed: int = SEED) -> list[TelemetrySample]:
    """Hourly synthetic samples for every site of ``federation``."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    hod = hours % 24
    weekend = ((hours // 24) % 7) >= 5
    samples: list[TelemetrySample] = []
    for site in federation.sites:
        util = 0.55 + 0.25 * np.sin(2 * np.pi * (hod - 9) / 24) - 0.15 * weekend
        util = np.clip(util + _ar1(rng, len(hours), 0.8, 0.05), 0.02, 0.98)
        backlog = np.maximum(
            0.0,
            (util - 0.7) * site.cores * 3600 * 2
            + _ar1(rng, len(hours), 0.7, 0.05 * site.cores * 3600),
        )
        price0 = site.energy_price_eur_per_kwh
        carbon0 = site.carbon_intensity_g_per_kwh
        if price0 is None or carbon0 is None:
            raise SystemExit(
                f"site {site.id!r}: the generator needs energy_price_eur_per_kwh and "
                "carbon_intensity_g_per_kwh in the federation file"
            )
        price = price0 * (
            1
            + 0.25 * np.cos(2 * np.pi * (hod - 19) / 24)
            + 0.08 * np.cos(2 * np.pi * (hod - 8) / 12)
            - 0.15 * weekend
        ) + _ar1(rng, len(hours), 0.9, 0.05 * price0)
        carbon = carbon0 * (1 + 0.2 * np.cos(2 * np.pi * (hod - 19) / 24)) + _ar1(
            rng, len(hours), 0.9, 0.05 * carbon0
        )
        carbon = np.maximum(carbon, 0.0)
        links = [lk for lk in federation.links if lk.src == site.id]
        thr = {
            lk.dst: np.maximum(
                0.0,
                0.4 * lk.bandwidth * (1 + 0.3 * np.sin(2 * np.pi * (hod - 12) / 24))
                + _ar1(rng, len(hours), 0.6, 0.05 * lk.bandwidth),
            )
            for lk in links
        }
        for k in hours:

            def keep() -> bool:
                return bool(rng.random() >= 0.03)

            samples.append(
                TelemetrySample(
                    site=site.id,
                    timestamp=START + 3600.0 * float(k),
                    utilisation=float(util[k]) if keep() else None,
                    backlog=float(backlog[k]) if keep() else None,
                    power_price=float(price[k]) if keep() else None,
                    carbon_intensity=float(carbon[k]) if keep() else None,
                    links={d: float(v[k]) for d, v in thr.items() if keep()},
                )
            )
    samples.sort(key=lambda s: (s.timestamp, s.site))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    samples = generate(load_demo_federation(), args.days)
    write_telemetry_csv(samples, args.out)
    print(f"wrote {len(samples)} synthetic samples to {args.out}")


if __name__ == "__main__":
    main()
