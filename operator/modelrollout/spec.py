"""The ModelRollout spec, parsed once into typed, frozen objects.

`parse_spec(raw)` either returns a `RolloutSpec` or raises `SpecError` naming the field
(`spec.strategy.steps[2].weight`), which the operator turns into the InvalidSpec condition.
Preset queries are resolved here, so the rest of the code sees complete metric rules.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from enum import Enum
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class SpecError(ValueError):
    """An invalid spec: `field` is the path a user can find in their manifest."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_duration(text: str | int | float) -> float:
    """'1h30m' -> 5400.0 seconds. Numbers are taken as seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    text = str(text).strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h30m or 500ms")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """Seconds as a PromQL range ('30s', '2m'); sub-second values are rounded up to 1s."""
    whole = max(1, int(round(seconds)))
    return f"{whole // 60}m" if whole % 60 == 0 else f"{whole}s"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


Duration = float  # seconds, parsed from strings by the validators below


def _duration_field(value: Any) -> float:
    return parse_duration(value)


class ModelInfo(_Frozen):
    name: str = ""
    version: str = ""


class Selector(_Frozen):
    match_labels: dict[str, str] = Field(alias="matchLabels", min_length=1)


class ServiceSpec(_Frozen):
    port: int = Field(ge=1, le=65535)
    target_port: int | str | None = Field(default=None, alias="targetPort")


class GatewayApiRouting(_Frozen):
    http_route: str = Field(alias="httpRoute", min_length=1)


class TrafficRouting(_Frozen):
    replicas: dict[str, Any] | None = None
    gateway_api: GatewayApiRouting | None = Field(default=None, alias="gatewayAPI")

    @model_validator(mode="after")
    def _exactly_one(self) -> TrafficRouting:
        chosen = [name for name in ("replicas", "gateway_api") if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one router: replicas or gatewayAPI")
        return self

    @property
    def router(self) -> str:
        return "replicas" if self.replicas is not None else "gatewayAPI"


class Step(_Frozen):
    weight: int = Field(ge=0, le=100)
    hold: Duration | None = None  # None: wait for a manual promote

    _parse_hold = field_validator("hold", mode="before")(lambda v: None if v is None else _duration_field(v))


class Warmup(_Frozen):
    readiness_timeout: Duration = Field(default=600.0, alias="readinessTimeout")
    skip_analysis_for: Duration = Field(default=0.0, alias="skipAnalysisFor")

    _parse = field_validator("readiness_timeout", "skip_analysis_for", mode="before")(_duration_field)


class JobGate(_Frozen):
    """A Job run against the canary (env CANARY_SERVICE, CANARY_REVISION, ...); success passes."""

    template: dict[str, Any]
    backoff_limit: int = Field(default=0, ge=0, alias="backoffLimit")
    timeout: Duration = 600.0

    _parse = field_validator("timeout", mode="before")(_duration_field)


class WebhookGate(_Frozen):
    """An HTTP POST naming rollout, revisions and step; a 2xx answer passes."""

    url: str = Field(pattern=r"^https?://")
    timeout: Duration = 10.0
    retries: int = Field(default=2, ge=0, le=10)

    _parse = field_validator("timeout", mode="before")(_duration_field)


class Gate(_Frozen):
    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    job: JobGate | None = None
    webhook: WebhookGate | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Gate:
        if (self.job is None) == (self.webhook is None):
            raise ValueError(f"gate {self.name!r} needs exactly one of job or webhook")
        return self


class Gates(_Frozen):
    before_traffic: tuple[Gate, ...] = Field(default=(), alias="beforeTraffic")
    before_promotion: tuple[Gate, ...] = Field(default=(), alias="beforePromotion")

    def stage(self, name: str) -> tuple[Gate, ...]:
        return {"beforeTraffic": self.before_traffic, "beforePromotion": self.before_promotion}[name]


class Strategy(_Frozen):
    warmup: Warmup = Warmup()
    steps: tuple[Step, ...] = Field(min_length=1)
    gates: Gates = Gates()

    @model_validator(mode="after")
    def _weights_never_go_down(self) -> Strategy:
        weights = [step.weight for step in self.steps]
        if weights != sorted(weights):
            raise ValueError(f"step weights must not decrease, got {weights}")
        return self


class MetricType(str, Enum):
    THRESHOLD = "threshold"
    PROPORTION = "proportion"
    QUANTILE = "quantile"
    DISTRIBUTION_SHIFT = "distributionShift"


class CompareToStable(_Frozen):
    max_increase: float | None = Field(default=None, alias="maxIncrease")
    max_decrease: float | None = Field(default=None, alias="maxDecrease")
    relative: bool = False


class MetricRule(_Frozen):
    """One gate. `query` is PromQL with {{ placeholders }}; see docs/resource.md."""

    name: str = Field(min_length=1)
    type: MetricType = MetricType.THRESHOLD
    query: str | None = None
    min: float | None = None
    max: float | None = None
    compare_to_stable: CompareToStable | None = Field(default=None, alias="compareToStable")
    critical: bool = False
    failure_limit: int = Field(default=1, ge=1, alias="failureLimit")
    min_samples: int | None = Field(default=None, ge=0, alias="minSamples")
    samples_query: str | None = Field(default=None, alias="samplesQuery")
    histogram: str | None = None
    quantile: float | None = Field(default=None, ge=0, le=1)
    success_query: str | None = Field(default=None, alias="successQuery")
    total_query: str | None = Field(default=None, alias="totalQuery")
    min_detectable_effect: float | None = Field(default=None, ge=0, alias="minDetectableEffect")
    alpha: float = Field(default=0.01, gt=0, le=0.5)

    @model_validator(mode="after")
    def _complete(self) -> MetricRule:
        if self.type is MetricType.THRESHOLD:
            if not self.query:
                raise ValueError(f"metric {self.name!r} needs a query (or a preset that names it)")
            if self.min is None and self.max is None and self.compare_to_stable is None:
                raise ValueError(f"metric {self.name!r} needs min, max or compareToStable")
        elif self.type is MetricType.PROPORTION:
            if not (self.success_query and self.total_query) and not (self.query and self.total_query):
                raise ValueError(f"metric {self.name!r} of type proportion needs totalQuery and query (bad events) or successQuery")
        elif self.type in (MetricType.QUANTILE, MetricType.DISTRIBUTION_SHIFT):
            if not self.histogram:
                raise ValueError(f"metric {self.name!r} of type {self.type.value} needs histogram")
            if self.type is MetricType.QUANTILE and self.quantile is None:
                raise ValueError(f"metric {self.name!r} of type quantile needs quantile")
        return self

    @property
    def threshold_text(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.compare_to_stable is not None:
            cmp = self.compare_to_stable
            unit = "x" if cmp.relative else ""
            if cmp.max_increase is not None:
                parts.append(f"<= stable + {cmp.max_increase:g}{unit}")
            if cmp.max_decrease is not None:
                parts.append(f">= stable - {cmp.max_decrease:g}{unit}")
        return " and ".join(parts)


class Samples(_Frozen):
    query: str | None = None
    min: int = Field(default=0, ge=0)


class NoDataPolicy(_Frozen):
    hold: Duration = 300.0
    then: Literal["rollback", "pause"] = "rollback"

    _parse = field_validator("hold", mode="before")(_duration_field)


class PrometheusSpec(_Frozen):
    address: str = Field(pattern=r"^https?://")
    timeout: Duration = 10.0

    _parse = field_validator("timeout", mode="before")(_duration_field)


class Analysis(_Frozen):
    interval: Duration = 30.0
    # {{ window }} grows with the step (more samples); a cap makes a mid-step degradation show
    # sooner but leaves less evidence for a PASS (docs/performance.md measures both). No cap by default.
    max_window: Duration | None = Field(default=None, alias="maxWindow")
    prometheus: PrometheusSpec | None = None
    preset: str | None = None
    samples: Samples = Samples()
    no_data: NoDataPolicy = Field(default=NoDataPolicy(), alias="noData")
    metrics: tuple[MetricRule, ...] = ()

    _parse = field_validator("interval", mode="before")(_duration_field)
    _parse_window = field_validator("max_window", mode="before")(lambda v: None if v is None else _duration_field(v))

    @property
    def window_cap(self) -> float:
        return self.max_window if self.max_window is not None else float("inf")


class RollbackSpec(_Frozen):
    scale_down_delay: Duration = Field(default=30.0, alias="scaleDownDelay")

    _parse = field_validator("scale_down_delay", mode="before")(_duration_field)


class RolloutSpec(_Frozen):
    model: ModelInfo = ModelInfo()
    replicas: int = Field(default=1, ge=0)
    selector: Selector
    template: dict[str, Any]
    service: ServiceSpec
    traffic_routing: TrafficRouting = Field(alias="trafficRouting")
    strategy: Strategy
    analysis: Analysis = Analysis()
    rollback: RollbackSpec = RollbackSpec()
    # On deletion: hand the stable revision's Deployment and Services over (kept, unowned) or delete them.
    on_delete: Literal["Handover", "DeleteAll"] = Field(default="Handover", alias="onDelete")

    @model_validator(mode="after")
    def _template_carries_selector(self) -> RolloutSpec:
        labels = (self.template.get("metadata") or {}).get("labels") or {}
        missing = {k: v for k, v in self.selector.match_labels.items() if labels.get(k) != v}
        if missing:
            raise ValueError(f"template.metadata.labels must include the selector's matchLabels {missing}")
        if not (self.template.get("spec") or {}).get("containers"):
            raise ValueError("template.spec.containers must list at least one container")
        return self

    @property
    def revision(self) -> str:
        """The template's revision: a short hash, stable across restarts and processes."""
        return template_revision(self.template)


def template_revision(template: dict[str, Any]) -> str:
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


@functools.lru_cache(maxsize=None)
def load_preset(name: str) -> dict[str, Any]:
    """A preset: named metric rules and a samples query for one kind of model server (read once)."""
    try:
        text = resources.files("modelrollout").joinpath("presets", f"{name}.yaml").read_text()
    except FileNotFoundError as exc:
        raise SpecError("spec.analysis.preset", f"unknown preset {name!r}") from exc
    return yaml.safe_load(text)


def _apply_preset(analysis: dict[str, Any]) -> dict[str, Any]:
    """Fill metric rules from the preset: a metric named like a preset entry inherits its fields."""
    preset_name = analysis.get("preset")
    if not preset_name:
        return analysis
    preset = copy.deepcopy(load_preset(preset_name))
    merged = dict(analysis)
    samples = dict(preset.get("samples") or {})
    samples.update(analysis.get("samples") or {})
    merged["samples"] = samples
    preset_metrics = preset.get("metrics") or {}
    metrics = []
    for metric in analysis.get("metrics") or []:
        base = dict(preset_metrics.get(metric.get("name"), {})) if isinstance(metric, dict) else {}
        if isinstance(metric, dict):
            base.update(metric)
            metrics.append(base)
        else:
            metrics.append(metric)
    merged["metrics"] = metrics
    return merged


def _field_path(loc: tuple[Any, ...]) -> str:
    path = "spec"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "constrained-")):
            continue
        else:
            path += f".{part}"
    return path


PLACEHOLDERS = frozenset({
    "namespace", "name", "revision", "canary.revision", "stable.revision", "canary.service",
    "stable.service", "model.name", "model.version", "interval", "window",
})
_PLACEHOLDER = re.compile(r"{{\s*([\w.]+)\s*}}")


def placeholders(query: str) -> set[str]:
    return set(_PLACEHOLDER.findall(query))


def render_query(query: str, values: dict[str, str]) -> str:
    """Fill {{ placeholders }}; values are escaped for a PromQL double-quoted string."""

    def escape(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return _PLACEHOLDER.sub(escape, query)


def _check_placeholders(spec: RolloutSpec) -> None:
    for index, metric in enumerate(spec.analysis.metrics):
        for field in ("query", "samples_query", "success_query", "total_query", "histogram"):
            text = getattr(metric, field)
            unknown = placeholders(text or "") - PLACEHOLDERS
            if unknown:
                alias = MetricRule.model_fields[field].alias or field
                raise SpecError(
                    f"spec.analysis.metrics[{index}].{alias}",
                    f"unknown placeholder {{{{ {sorted(unknown)[0]} }}}}; known: {', '.join(sorted(PLACEHOLDERS))}",
                )
    unknown = placeholders(spec.analysis.samples.query or "") - PLACEHOLDERS
    if unknown:
        raise SpecError("spec.analysis.samples.query", f"unknown placeholder {{{{ {sorted(unknown)[0]} }}}}")


def parse_spec(raw: dict[str, Any], default_prometheus: str | None = None) -> RolloutSpec:
    """Parse and validate a ModelRollout's spec. Raises SpecError naming the first bad field.

    `default_prometheus` is the operator's configured address, used when the spec names none.
    """
    data = dict(raw or {})
    if isinstance(data.get("analysis"), dict):
        data["analysis"] = _apply_preset(data["analysis"])
    try:
        spec = RolloutSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if not isinstance(p, str) or not p.startswith("function"))
        message = first["msg"].removeprefix("Value error, ")
        raise SpecError(_field_path(loc), message) from None
    if spec.analysis.metrics and spec.analysis.prometheus is None:
        if not default_prometheus:
            raise SpecError("spec.analysis.prometheus.address", "metrics need a Prometheus address (none configured for the operator)")
        analysis = spec.analysis.model_copy(update={"prometheus": PrometheusSpec(address=default_prometheus)})
        spec = spec.model_copy(update={"analysis": analysis})
    _check_placeholders(spec)
    names = [m.name for m in spec.analysis.metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError("spec.analysis.metrics", f"metric names must be unique, repeated: {duplicates}")
    return spec
