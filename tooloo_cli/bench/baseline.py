"""Benchmark figures as one flat list, and their comparison with a saved baseline.

    current = figures(document)                     # {"modules: cache set µs/op": Figure(...), ...}
    changes = compare(load(Path("baseline.json")), document, threshold=15)
    any(change.regressed for change in changes)     # what `tooloo bench --compare` exits 1 on
    missed_targets(document)                        # what `tooloo bench --strict` exits 1 on

Each figure knows which way is better, so a rise in req/s and a fall in µs/op both read
as improvements, and the threshold is the percentage by which a figure may get worse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tooloo_cli.errors import UsageError


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    lower_is_better: bool = True
    target: float | None = None

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.lower_is_better else self.value >= self.target


@dataclass(frozen=True)
class Change:
    figure: Figure
    baseline: float
    percent: float  # positive: worse

    def regressed(self, threshold: float) -> bool:
        return self.percent > threshold


def figures(document: dict[str, Any]) -> dict[str, Figure]:
    found: list[Figure] = []
    for result in document.get("modules", []):
        found.append(Figure(f"modules: {result['name']}", result["usPerOp"], "µs/op", True, result.get("targetUs")))
        for extra in result.get("figures", ()):  # a file saved before these figures has none
            found.append(Figure(f"modules: {result['name']}: {extra['name']}", extra["value"], extra["unit"],
                                extra["lowerIsBetter"], extra["target"]))
    http = document.get("http")
    if http:
        for scenario in http["scenarios"]:
            found.append(Figure(f"http: {scenario['name']} req/s", scenario["requests_per_s"], "req/s", False))
            found.append(Figure(f"http: {scenario['name']} p99", scenario["p99_ms"], "ms", True))
        targets = http["targets"]
        figure = http["figures"]
        if "proxiedShare" in figure:  # a file saved before the gateway figures has none
            found += [
                Figure("http: gateway keeps of direct req/s", figure["proxiedShare"] * 100, "%", False,
                       targets["proxiedShare"] * 100),
                Figure("http: gateway p99 over direct p99", figure["proxiedP99Ratio"], "×", True,
                       targets["proxiedP99Ratio"]),
            ]
        found += [
            Figure("http: middleware keeps of bare req/s", figure["middlewareShare"] * 100, "%", False,
                   targets["middlewareShare"] * 100),
            Figure("http: burst hit latency of a miss", figure["burstHitShare"] * 100, "%", True,
                   targets["burstHitShare"] * 100),
            Figure("http: sampling 1.0 capacity cost", figure["samplingCost"] * 100, "%", True,
                   targets["samplingCost"] * 100),
            Figure("http: eight services PSS", figure["stackPssMb"], "MiB", True, targets["stackPssMb"]),
        ]
        if "samplingNoise" in figure:  # a file saved before the paired measurement has none
            found.append(Figure("http: sampling cost's noise", figure["samplingNoise"] * 100, "%", True,
                                targets["samplingNoise"] * 100))
        if "scrapeCpuMs" in figure:  # a file saved before /metrics has none
            found.append(Figure("http: CPU of a /metrics scrape", figure["scrapeCpuMs"], "ms", True,
                                targets["scrapeCpuMs"]))
    startup = document.get("startup")
    if startup:
        units = {"upSeconds": "s", "downSeconds": "s", "portsFreeSeconds": "s", "orphans": "", "statusSeconds": "s",
                 "observeSeconds": "s", "versionSeconds": "s", "supervisorRssMb": "MiB", "upVsHoncho": "×",
                 "downVsHoncho": "×", "portsFreeVsHoncho": "×"}
        for key, value in startup["figures"].items():
            found.append(Figure(f"startup: {key}", value, units.get(key, ""), True, startup["targets"].get(key)))
    return {figure.name: figure for figure in found}


def missed_targets(document: dict[str, Any]) -> list[Figure]:
    """The figures that miss their target (what `tooloo bench --strict` exits 1 on)."""
    return [figure for figure in figures(document).values() if figure.meets_target is False]


def compare(baseline: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """Every figure present in both, with its change in percent (positive: worse)."""
    before = figures(baseline)
    changes = []
    for name, figure in figures(current).items():
        old = before.get(name)
        if old is None:
            continue
        if old.value == 0:
            percent = 0.0 if figure.value == 0 else 100.0
        else:
            percent = (figure.value - old.value) / abs(old.value) * 100
        changes.append(Change(figure, old.value, percent if figure.lower_is_better else -percent))
    return changes


def load(path: Path) -> dict[str, Any]:
    """A baseline written by `tooloo bench --save` (exit 2 when it cannot be one)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such baseline (write one with `tooloo bench --save {path}`)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a benchmark baseline ({exc})") from None
    if not isinstance(document, dict) or not figures(document):
        raise UsageError(f"{path}: not a benchmark baseline (it holds no figures)")
    return document
