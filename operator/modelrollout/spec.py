"""The ModelRollout spec, parsed once into typed, frozen objects.

`parse_spec(raw, policy)` either returns a `RolloutSpec` or raises `SpecError` naming the field
(`spec.strategy.steps[2].weight`), which the operator turns into the InvalidSpec condition.
The platform's policy (`PlatformPolicy`, docs/security.md) says which Prometheus addresses and
webhooks a spec may name, how long it may let their calls take, and which identity Job gates run with.
Preset queries are resolved here, so the rest of the code sees complete metric rules.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import hashlib
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import promql_parser
import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from modelrollout.names import LIMITS

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


DEFAULT_MAX_CALL_TIMEOUT = 60.0  # seconds; the platform sets its own with --max-call-timeout
CALL_TIMEOUT_CEILING = 600.0  # the CRD's bound on every call timeout (its x-kubernetes-validations), and the flag's


def _call_timeout(value: Any, info: ValidationInfo) -> float:
    """The timeout of a call the operator makes for the rollout, within the platform's maximum (the
    policy parse_spec validates under): a hung server holds the rollout's step for that long each try."""
    seconds = parse_duration(value)
    limit = ((info.context or {}).get("policy") or PlatformPolicy()).max_call_timeout
    if seconds > limit:
        raise ValueError(f"{value} is longer than this platform lets one call take: at most {limit:g}s "
                         "(the operator's --max-call-timeout)")
    return seconds


CallTimeout = Annotated[float, BeforeValidator(_call_timeout)]  # seconds


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


class IstioRouting(_Frozen):
    """An Istio VirtualService; `routes` names the http routes the rollout may edit (empty: every
    http route with a destination to this rollout's Services)."""

    virtual_service: str = Field(alias="virtualService", min_length=1)
    routes: tuple[str, ...] = ()


class KServeRouting(_Frozen):
    """An existing KServe InferenceService: the rollout writes its predictor from `template` and
    splits traffic with KServe's own fields (docs/routers.md)."""

    inference_service: str = Field(alias="inferenceService", min_length=1)


_ROUTERS = {"replicas": "replicas", "gateway_api": "gatewayAPI", "istio": "istio",
            "kserve": "kserve"}  # field -> spec name


class TrafficRouting(_Frozen):
    replicas: dict[str, Any] | None = None
    gateway_api: GatewayApiRouting | None = Field(default=None, alias="gatewayAPI")
    istio: IstioRouting | None = None
    kserve: KServeRouting | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TrafficRouting:
        chosen = [name for name in _ROUTERS if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one router: {', '.join(_ROUTERS.values())}")
        return self

    @property
    def router(self) -> str:
        return next(spec_name for name, spec_name in _ROUTERS.items() if getattr(self, name) is not None)


class Step(_Frozen):
    weight: int = Field(ge=0, le=100)
    hold: Duration | None = None  # None: wait for a manual promote
    # A mirror step copies this percent of live requests to the canary (answers discarded); its
    # weight is 0: no user sees a canary answer.
    mirror: int = Field(default=0, ge=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _mirror_has_no_weight(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mirror"):
            if data.get("weight", 0) != 0:
                raise ValueError("a mirror step sends users nothing: leave weight out (or 0)")
            return {**data, "weight": 0}
        return data

    _parse_hold = field_validator("hold", mode="before")(lambda v: None if v is None else _duration_field(v))


class Warmup(_Frozen):
    readiness_timeout: Duration = Field(default=600.0, alias="readinessTimeout")
    skip_analysis_for: Duration = Field(default=0.0, alias="skipAnalysisFor")

    _parse = field_validator("readiness_timeout", "skip_analysis_for", mode="before")(_duration_field)


class JobGate(_Frozen):
    """A Job run against the canary (env CANARY_SERVICE, CANARY_REVISION, ...); success passes.

    After parse_spec, `template` is the pod template as the operator runs it: checked against Pod
    Security "restricted", with the platform's ServiceAccount and restricted defaults filled in.
    """

    template: dict[str, Any]
    backoff_limit: int = Field(default=0, ge=0, alias="backoffLimit")
    timeout: Duration = 600.0

    _parse = field_validator("timeout", mode="before")(_duration_field)


class WebhookGate(_Frozen):
    """An HTTP POST naming rollout, revisions and step; a 2xx answer passes."""

    url: str = Field(pattern=r"^https?://")
    timeout: CallTimeout = 10.0
    retries: int = Field(default=2, ge=0, le=10)


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


# Routers whose stable revision keeps all its Ready pods while the canary takes all traffic, so that
# routing back to it is one write: the promotion watch needs them.
ROUTERS_WITH_STANDBY_STABLE = frozenset({"gatewayAPI", "istio"})
DEFAULT_PROMOTION_WATCH = 60.0


class Promotion(_Frozen):
    """After the last step passes and the canary has all its replicas Ready, it serves all traffic for
    `watch` while analysis goes on; a failing metric then routes everyone back to the stable revision,
    still running. Only then does the canary become stable. None: DEFAULT_PROMOTION_WATCH where the
    router keeps the stable on standby (ROUTERS_WITH_STANDBY_STABLE), else 0 (no watch)."""

    watch: Duration | None = None

    _parse = field_validator("watch", mode="before")(lambda v: None if v is None else _duration_field(v))


class Strategy(_Frozen):
    warmup: Warmup = Warmup()
    steps: tuple[Step, ...] = Field(min_length=1)
    gates: Gates = Gates()
    promotion: Promotion = Promotion()

    @property
    def mirrors(self) -> bool:
        """Whether any step mirrors live requests to the canary."""
        return any(step.mirror for step in self.steps)

    @model_validator(mode="after")
    def _weights_never_go_down(self) -> Strategy:
        weights = [step.weight for step in self.steps]
        if weights != sorted(weights):
            raise ValueError(f"step weights must not decrease, got {weights}")
        return self


def _uncommented_query(query: str | None) -> str | None:
    """A query as the operator keeps it: without comments (see without_comments)."""
    if query is None:
        return None
    kept = without_comments(query)
    if query.strip() and not kept.strip():
        raise ValueError("holds only a comment: no PromQL to ask")
    return kept


class MetricType(str, Enum):
    THRESHOLD = "threshold"
    PROPORTION = "proportion"
    QUANTILE = "quantile"
    DISTRIBUTION_SHIFT = "distributionShift"
    STOCHASTIC_ORDER = "stochasticOrder"  # is the canary slower than stable anywhere in the histogram


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
    # proportion: the chance of catching a canary `minDetectableEffect` beyond its limit (analysis.pass: powered)
    power: float = Field(default=0.8, gt=0, le=0.999)

    _uncommented = field_validator("query", "samples_query", "histogram", "success_query", "total_query")(
        _uncommented_query)

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
            # A rate of bad events has a highest acceptable value (max), a success rate a lowest (min).
            wrong = "min" if self.success_query is None else "max"
            if getattr(self, wrong) is not None:
                rate = "bad events (query)" if wrong == "min" else "successes (successQuery)"
                raise ValueError(f"metric {self.name!r} counts {rate}: bound it with "
                                 f"{'max' if wrong == 'min' else 'min'}, not {wrong}")
            if self.compare_to_stable is not None and self.compare_to_stable.relative:
                raise ValueError(f"metric {self.name!r} of type proportion compares absolute rates: "
                                 "relative is not supported, give the tolerance as a rate (minDetectableEffect)")
        elif self.type in (MetricType.QUANTILE, MetricType.DISTRIBUTION_SHIFT, MetricType.STOCHASTIC_ORDER):
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
        elif self.type is MetricType.PROPORTION and self.min_detectable_effect is not None:
            sign = "- " if self.success_query else "+ "
            parts.append(f"{'>=' if self.success_query else '<='} stable {sign}{self.min_detectable_effect:g}")
        return " and ".join(parts)

    @property
    def rate_tolerance(self) -> float | None:
        """A proportion's tolerated distance from stable's rate (absolute), when it compares with stable."""
        if self.min_detectable_effect is not None:
            return self.min_detectable_effect
        cmp = self.compare_to_stable
        if cmp is None:
            return None
        return cmp.max_increase if cmp.max_increase is not None else cmp.max_decrease  # either names it

    @property
    def rate_bound(self) -> float | None:
        """A proportion's fixed bound: max of a bad-event rate, min of a success rate."""
        return self.min if self.success_query else self.max

    @property
    def compares_with_stable(self) -> bool:
        """A proportion is judged against stable's counts when it has a tolerance, or no bound."""
        return self.rate_tolerance is not None or self.rate_bound is None


class Samples(_Frozen):
    query: str | None = None
    min: int = Field(default=0, ge=0)

    _uncommented = field_validator("query")(_uncommented_query)


class NoDataPolicy(_Frozen):
    hold: Duration = 300.0
    then: Literal["rollback", "pause"] = "rollback"

    _parse = field_validator("hold", mode="before")(_duration_field)


class PrometheusSpec(_Frozen):
    address: str = Field(pattern=r"^https?://")
    timeout: CallTimeout = 10.0


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
    # When a rate from counts passes (docs/analysis.md): "powered" once it had the requests that catch a
    # canary minDetectableEffect beyond its limit with the metric's power (or once proven, if sooner);
    # "proven" only once it is significantly within every limit (may need many more requests).
    pass_rule: Literal["powered", "proven"] = Field(default="powered", alias="pass")
    # A step still undecided this long after its hold pauses, saying how many more requests it needs.
    decide_within: Duration = Field(default=1800.0, alias="decideWithin")
    # Rates from counts are also judged over the step's latest one to two blocks of this length, a
    # window that may only FAIL (a mid-step degradation is not diluted). Default 5 intervals; 0 turns it off.
    recent_window: Duration | None = Field(default=None, alias="recentWindow")

    _parse = field_validator("interval", "decide_within", mode="before")(_duration_field)
    _parse_recent = field_validator("recent_window", mode="before")(lambda v: None if v is None else _duration_field(v))
    _parse_window = field_validator("max_window", mode="before")(lambda v: None if v is None else _duration_field(v))

    @property
    def recent_block(self) -> float:
        """Seconds of one block of the recent window (0: no recent window)."""
        return 5 * self.interval if self.recent_window is None else self.recent_window

    @property
    def window_cap(self) -> float:
        return self.max_window if self.max_window is not None else float("inf")


class RollbackSpec(_Frozen):
    scale_down_delay: Duration = Field(default=30.0, alias="scaleDownDelay")

    _parse = field_validator("scale_down_delay", mode="before")(_duration_field)


NOTIFICATION_EVENTS = ("RolledBack", "Promoted", "ManualGate", "NoData")
NotificationEvent = Literal["RolledBack", "Promoted", "ManualGate", "NoData"]
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class SecretKeyRef(_Frozen):
    """A key of a Secret in the rollout's own namespace."""

    name: str = Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class Notification(_Frozen):
    """A receiver of the rollout's notable moments (docs/notifications.md).

    The Secret's key holds the webhook URL (slack, msteams, webhook) or the routing key (pagerduty).
    """

    provider: Literal["slack", "msteams", "pagerduty", "webhook"]
    secret_ref: SecretKeyRef = Field(alias="secretRef")
    events: tuple[NotificationEvent, ...] = Field(default=NOTIFICATION_EVENTS, min_length=1)
    address: str | None = Field(default=None, pattern=r"^https?://")  # PagerDuty's Events API endpoint

    @model_validator(mode="after")
    def _address_is_pagerdutys(self) -> Notification:
        if self.address is not None and self.provider != "pagerduty":
            raise ValueError("address is for provider pagerduty only (the other providers' URL is in the Secret)")
        return self

    @property
    def endpoint(self) -> str | None:
        """Where PagerDuty events go; None for the providers whose URL is in the Secret."""
        return (self.address or PAGERDUTY_EVENTS_URL) if self.provider == "pagerduty" else None


class RolloutSpec(_Frozen):
    model: ModelInfo = ModelInfo()
    replicas: int = Field(default=1, ge=1)  # 0 would route every request to no pod
    selector: Selector
    template: dict[str, Any]
    service: ServiceSpec
    traffic_routing: TrafficRouting = Field(alias="trafficRouting")
    strategy: Strategy
    analysis: Analysis = Analysis()
    rollback: RollbackSpec = RollbackSpec()
    # On deletion: hand the stable revision's Deployment and Services over (kept, unowned) or delete them.
    on_delete: Literal["Handover", "DeleteAll"] = Field(default="Handover", alias="onDelete")
    notifications: tuple[Notification, ...] = Field(default=(), max_length=10)

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

    @property
    def promotion_watch(self) -> float:
        """Seconds the canary serves all traffic, still judged, before it becomes stable (0: none)."""
        watch = self.strategy.promotion.watch
        if watch is not None:
            return watch
        return DEFAULT_PROMOTION_WATCH if self.traffic_routing.router in ROUTERS_WITH_STANDBY_STABLE else 0.0


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
    """Fill metric rules from the preset: a metric named like a preset entry inherits its fields;
    with no metric listed, the preset's `defaults` apply."""
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
    # No metric listed: the preset's defaults (the metrics every server of its kind should pass).
    for metric in analysis.get("metrics") or [{"name": name} for name in preset.get("defaults") or ()]:
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
    "namespace", "name", "revision", "workload", "canary.revision", "stable.revision", "canary.service",
    "stable.service", "model.name", "model.version", "interval", "window",
})
DURATION_PLACEHOLDERS = frozenset({"interval", "window"})  # PromQL durations, written outside quotes
_PLACEHOLDER = re.compile(r"{{\s*([\w.]+)\s*}}")
_DURATION_VALUE = re.compile(r"[0-9]{1,9}(ms|s|m|h)")


# promql-parser speaks Prometheus 3; holt_winters is Prometheus 2's name of double_exponential_smoothing.
promql_parser.register_extra_functions([promql_parser.Function(
    "holt_winters", [promql_parser.ValueType.Matrix, promql_parser.ValueType.Scalar, promql_parser.ValueType.Scalar],
    promql_parser.ValueType.Vector)])


class QueryError(ValueError):
    """A query that cannot be rendered without changing its shape (the analysis becomes inconclusive)."""


def placeholders(query: str) -> set[str]:
    return set(_PLACEHOLDER.findall(query))


@dataclass(frozen=True)
class _Slot:
    name: str
    quote: str | None  # '"', "'", '`', or None outside any string literal


@functools.lru_cache(maxsize=4096)
def _slots(query: str) -> tuple[str | _Slot, ...]:
    """The query as literal text and placeholders, each placeholder with the quote it sits in, without
    its comments.

    A small PromQL lexer: strings in double or single quotes (with backslash escapes), raw strings
    in backticks, and comments from # to the end of the line (a placeholder there is comment text too).
    """
    parts: list[str | _Slot] = []
    quote: str | None = None
    start = i = 0
    while i < len(query):
        char = query[i]
        if quote is None and char == "#":
            parts.append(query[start:i])
            while i < len(query) and query[i] not in "\r\n":  # where promql-parser and Prometheus end it
                i += 1
            start = i
            continue
        match = _PLACEHOLDER.match(query, i)
        if match:
            parts.append(query[start:i])
            parts.append(_Slot(match.group(1), quote))
            start = i = match.end()
            continue
        if quote is None:
            if char in "\"'`":
                quote = char
        elif char == "\\":
            i += 1  # the escaped character cannot end the string (promql-parser does this in backticks too)
        elif char == quote:
            quote = None
        i += 1
    parts.append(query[start:])
    return tuple(part for part in parts if part != "")


def without_comments(query: str) -> str:
    """The query with its `# comments` removed, placeholders kept: what the operator builds bigger queries
    from (a comment would swallow the rest of the line they are built on)."""
    return "".join(part if isinstance(part, str) else f"{{{{ {part.name} }}}}" for part in _slots(query))


def _escape(value: str, quote: str | None, name: str) -> str:
    """`value` as the inside of a PromQL string literal in `quote`; refuses what cannot be one."""
    if name in DURATION_PLACEHOLDERS:
        if not _DURATION_VALUE.fullmatch(value):
            raise QueryError(f"{{{{ {name} }}}} must be a duration like 30s, got {value!r}")
        return value
    if quote is None:
        raise QueryError(f"{{{{ {name} }}}} must sit inside a quoted string")
    if any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        raise QueryError(f"{{{{ {name} }}}} is not valid Unicode")
    if quote == "`":
        # A raw string has no escapes, and parsers disagree on a backslash before a backtick.
        if any(char in "`\\" or ord(char) < 0x20 or ord(char) == 0x7F for char in value):
            raise QueryError(f"{{{{ {name} }}}} holds a character a backtick string cannot carry")
        return value
    out = []
    for char in value:
        if char in ("\\", quote):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def render_query(query: str, values: Mapping[str, str]) -> str:
    """Fill {{ placeholders }} so that each value can only ever be (part of) a string literal.

    Values are escaped for the quote around them (double, single or backtick), and the result is
    parsed and compared with the template: the same tree, with each placeholder's string holding
    exactly its value. Anything else raises QueryError.
    """
    slots = _slots(query)
    rendered = _fill(slots, values)
    if all(isinstance(part, str) for part in slots):
        return rendered
    # Durations are digits and a unit (checked by _escape): the tree's shape does not depend on
    # them, so it is checked with fixed ones and the template's parse is computed once.
    checked = rendered if _FIXED_DURATIONS.items() <= values.items() else _fill(slots, {**values, **_FIXED_DURATIONS})
    template, markers = _marked(query)
    expected = _shape(template, lambda text: _unmark(text, markers, values))
    try:
        actual = _shape(promql_parser.parse(checked), lambda text: text)
    except ValueError as exc:
        raise QueryError(f"the rendered query does not parse: {exc}") from None
    if actual != expected:
        raise QueryError("placeholder values would change the query's structure")
    return rendered


def _fill(slots: tuple[str | _Slot, ...], values: Mapping[str, str]) -> str:
    return "".join(part if isinstance(part, str) else _escape(values[part.name], part.quote, part.name)
                   for part in slots)


_FIXED_DURATIONS = {"interval": "1m", "window": "1m"}
_MARKER = "zmr" + secrets.token_hex(6)  # letters and digits: valid inside every kind of string literal


@functools.lru_cache(maxsize=4096)
def _marked(query: str) -> tuple[Any, dict[str, str]]:
    """The query parsed with a unique marker in each string placeholder, and marker -> placeholder."""
    markers: dict[str, str] = {}
    text = []
    for part in _slots(query):
        if isinstance(part, str):
            text.append(part)
        elif part.name in DURATION_PLACEHOLDERS:
            text.append(_FIXED_DURATIONS[part.name])
        else:
            marker = f"{_MARKER}x{len(markers)}x"
            markers[marker] = part.name
            text.append(marker)
    try:
        return promql_parser.parse("".join(text)), markers
    except ValueError as exc:
        raise QueryError(f"the query does not parse: {exc}") from None


def _unmark(text: str, markers: Mapping[str, str], values: Mapping[str, str]) -> str:
    for marker, name in markers.items():
        text = text.replace(marker, values[name])
    return text


def _shape(node: Any, text: Callable[[str], str]) -> tuple[Any, ...]:
    """A PromQL tree as nested tuples: node kinds, operators, label names, and every string's value."""
    kind = type(node).__name__
    pp = promql_parser

    def matchers(group: Any) -> tuple[Any, ...]:
        return tuple((m.name, str(m.op), text(m.value)) for m in group)

    def at(modifier: Any) -> Any:
        return None if modifier is None else (str(modifier.type), modifier.at)

    if isinstance(node, pp.VectorSelector):
        return (kind, node.name and text(node.name), matchers(node.matchers.matchers),
                tuple(matchers(group) for group in node.matchers.or_matchers), node.offset, at(node.at))
    if isinstance(node, pp.MatrixSelector):
        return (kind, _shape(node.vector_selector, text), node.range)
    if isinstance(node, pp.StringLiteral):
        return (kind, text(node.val))
    if isinstance(node, pp.NumberLiteral):
        return (kind, repr(node.val))
    if isinstance(node, pp.Call):
        return (kind, node.func.name, tuple(_shape(arg, text) for arg in node.args))
    if isinstance(node, pp.AggregateExpr):
        param = _shape(node.param, text) if isinstance(node.param, pp.Expr) else repr(node.param)
        modifier = node.modifier and (str(node.modifier.type), tuple(node.modifier.labels))
        return (kind, str(node.op), param, modifier, _shape(node.expr, text))
    if isinstance(node, pp.BinaryExpr):
        mod = node.modifier
        modifier = mod and (str(mod.card), mod.matching and (str(mod.matching.type), tuple(mod.matching.labels)),
                            mod.return_bool, tuple(mod.group_labels or ()),
                            mod.fill_values and (mod.fill_values.lhs, mod.fill_values.rhs))
        return (kind, str(node.op), modifier, _shape(node.lhs, text), _shape(node.rhs, text))
    if isinstance(node, (pp.UnaryExpr, pp.ParenExpr)):
        return (kind, _shape(node.expr, text))
    if isinstance(node, pp.SubqueryExpr):
        return (kind, _shape(node.expr, text), node.range, node.step, node.offset, at(node.at))
    raise QueryError(f"unexpected PromQL node {kind}")


# Values a placeholder may hold: what Kubernetes allows for the name, or a safe charset.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MODEL_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,252}")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")  # length: LIMITS
_VALUE_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "namespace": (_DNS_LABEL, "a DNS label"),
    "name": (_DNS_SUBDOMAIN, "a DNS subdomain"),
    "canary.service": (_DNS_SUBDOMAIN, "a DNS subdomain"),
    "stable.service": (_DNS_SUBDOMAIN, "a DNS subdomain"),
    "revision": (_DNS_LABEL, "a DNS label"),
    "workload": (_DNS_SUBDOMAIN, "a DNS subdomain"),
    "canary.revision": (_DNS_LABEL, "a DNS label"),
    "stable.revision": (_DNS_LABEL, "a DNS label"),
    "model.name": (_MODEL_TEXT, "letters, digits and . _ : / + -"),
    "model.version": (_MODEL_TEXT, "letters, digits and . _ : / + -"),
    "interval": (_DURATION_VALUE, "a duration"),
    "window": (_DURATION_VALUE, "a duration"),
}
# What a query is checked with when the spec is parsed (the real values exist only at run time).
_EXAMPLE_VALUES = {
    "namespace": "ml", "name": "model", "revision": "0a1b2c3d4e", "workload": "model-0a1b2c3d4e",
    "canary.revision": "0a1b2c3d4e",
    "stable.revision": "5f6a7b8c9d", "canary.service": "model-canary", "stable.service": "model-stable",
    "model.name": "model", "model.version": "1.0.0", "interval": "30s", "window": "5m",
}


def check_query_values(values: Mapping[str, str]) -> None:
    """Refuse placeholder values Kubernetes would not allow for what they name (empty revisions pass)."""
    for name, value in values.items():
        pattern, what = _VALUE_RULES[name]
        if value and not pattern.fullmatch(value):
            raise QueryError(f"{{{{ {name} }}}} must be {what}, got {value[:80]!r}")


def histogram_query(histogram: str) -> str:
    """The bucket query of a quantile or distributionShift metric (a template, like any query)."""
    return f"sum by (le) (increase({histogram}[{{{{ window }}}}]))"


def _check_query(field: str, query: str | None, *, selector: bool = False) -> None:
    """Unknown or unquoted placeholders, and PromQL that does not parse, are InvalidSpec naming `field`."""
    if not query:
        return
    for part in _slots(query):
        if isinstance(part, str):
            continue
        if part.name not in PLACEHOLDERS:
            raise SpecError(field, f"unknown placeholder {{{{ {part.name} }}}}; known: {', '.join(sorted(PLACEHOLDERS))}")
        if part.quote is None and part.name not in DURATION_PLACEHOLDERS:
            raise SpecError(field, f"{{{{ {part.name} }}}} must sit inside a quoted string, e.g. label=\"{{{{ {part.name} }}}}\"")
    try:
        tree = promql_parser.parse(render_query(query, _EXAMPLE_VALUES))
    except QueryError as exc:
        raise SpecError(field, str(exc)) from None
    except ValueError as exc:
        raise SpecError(field, f"PromQL does not parse: {exc}") from None
    if selector and not isinstance(tree, promql_parser.VectorSelector):
        raise SpecError(field, 'must be a series selector like name_bucket{label="value"}')


def _check_metric(index: int, metric: MetricRule) -> None:
    field = f"spec.analysis.metrics[{index}]"
    if metric.min is not None and metric.max is not None and metric.min > metric.max:
        raise SpecError(f"{field}.max", f"max {metric.max:g} is below min {metric.min:g}: no value could pass")
    for name in ("query", "samples_query", "success_query", "total_query"):
        _check_query(f"{field}.{MetricRule.model_fields[name].alias or name}", getattr(metric, name))
    _check_query(f"{field}.histogram", metric.histogram, selector=True)


@dataclass(frozen=True)
class PlatformPolicy:
    """What the platform (whoever installs the operator) lets a ModelRollout make the operator do.

    Set by flags and Helm values; docs/security.md explains each knob.
    """

    prometheus_url: str | None = None  # the operator's Prometheus: used when a spec names none; gets the token
    allowed_prometheus_urls: tuple[str, ...] = ()  # other addresses a spec may name (never sent the token)
    allowed_webhook_urls: tuple[str, ...] = ()  # glob patterns; empty: no webhook gates
    gate_service_account: str | None = None  # the ServiceAccount of Job gates' pods (None: the namespace's default)
    gate_service_account_token: bool = False  # may a Job gate's pod mount its ServiceAccount token
    # Glob patterns of the URLs notifications may be sent to (see DEFAULT_NOTIFICATION_URLS).
    allowed_notification_urls: tuple[str, ...] = ()
    max_call_timeout: float = DEFAULT_MAX_CALL_TIMEOUT  # seconds a spec may let one webhook or Prometheus call take

    def prometheus_allowed(self, address: str) -> bool:
        allowed = {_normal_url(url) for url in (self.prometheus_url, *self.allowed_prometheus_urls) if url}
        return _normal_url(address) in allowed

    def webhook_allowed(self, url: str) -> bool:
        return url_matches(url, self.allowed_webhook_urls)

    def notification_allowed(self, url: str) -> bool:
        return url_matches(url, self.allowed_notification_urls)


# The receivers' public endpoints: a rollout author can reach the team's Slack, Teams or PagerDuty,
# nothing inside the cluster. A generic webhook needs the platform to add its pattern.
DEFAULT_NOTIFICATION_URLS = (
    "https://hooks.slack.com/services/*",
    "https://*.webhook.office.com/*",
    "https://*.logic.azure.com:443/workflows/*",
    "https://*.api.powerplatform.com/*",
    PAGERDUTY_EVENTS_URL,
    "https://events.eu.pagerduty.com/v2/enqueue",
)


# A host name or an IP address and a port: nothing a resolver or an HTTP client could read as another host
# (user info, backslashes, percent escapes).
_PLAIN_NETLOC = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def reading_policy(raw_spec: Mapping[str, Any], prometheus_url: str | None = None) -> PlatformPolicy:
    """A policy under which a spec's own addresses pass, for tools that only read a rollout (the
    plugin's tree and report); the operator, which calls them, never uses it."""
    address = ((raw_spec.get("analysis") or {}).get("prometheus") or {}).get("address")
    return PlatformPolicy(prometheus_url=address or prometheus_url or "http://prometheus.invalid",
                          allowed_webhook_urls=("*",), allowed_notification_urls=("*",), max_call_timeout=math.inf)


def url_matches(url: str, patterns: tuple[str, ...]) -> bool:
    """Whether `url` matches a glob pattern part by part: scheme, host[:port] and path separately, so
    a `*` in the host never matches a path (`https://*.example.com/*` refuses
    `https://evil.test/.example.com/`); a host other than a plain name or address (user info, which
    only hides the real host, escapes) never passes."""
    parts = urlsplit(url)
    if not parts.scheme or not _PLAIN_NETLOC.fullmatch(parts.netloc):
        return False
    for pattern in patterns:
        if pattern == "*":  # everything (offline tools that only parse specs)
            return True
        wanted = urlsplit(pattern)
        netloc = re.sub(r"[][]", r"[\g<0>]", wanted.netloc)  # an IPv6 address's brackets are literal
        if (parts.scheme == wanted.scheme and fnmatch.fnmatchcase(parts.netloc, netloc)
                and fnmatch.fnmatchcase(parts.path, wanted.path or "/")
                and fnmatch.fnmatchcase(parts.query, wanted.query or "*")):
            return True
    return False


def _normal_url(url: str) -> str:
    return url.strip().rstrip("/")


def is_operator_prometheus(policy: PlatformPolicy, address: str) -> bool:
    """Only the operator's own Prometheus may receive its credentials."""
    return bool(policy.prometheus_url) and _normal_url(address) == _normal_url(policy.prometheus_url or "")


def _check_prometheus(spec: RolloutSpec, policy: PlatformPolicy) -> RolloutSpec:
    field = "spec.analysis.prometheus.address"
    if spec.analysis.prometheus is None:
        if not policy.prometheus_url:
            raise SpecError(field, "metrics need a Prometheus address (none configured for the operator)")
        analysis = spec.analysis.model_copy(update={"prometheus": PrometheusSpec(address=policy.prometheus_url)})
        return spec.model_copy(update={"analysis": analysis})
    if not policy.prometheus_allowed(spec.analysis.prometheus.address):
        allowed = [url for url in (policy.prometheus_url, *policy.allowed_prometheus_urls) if url]
        raise SpecError(field, f"{spec.analysis.prometheus.address} is not a Prometheus this platform allows "
                               f"(allowed: {', '.join(allowed) or 'none'}); leave address out to use the operator's")
    return spec


def _check_replicas_router(spec: RolloutSpec) -> None:
    """The replicas router shares traffic by pod count: only whole pods, and no traffic-free phase."""
    if spec.traffic_routing.router != "replicas":
        return
    why = "with the replicas router the canary's pods serve users as soon as they are Ready"
    replicas = spec.replicas
    unit = 100 // math.gcd(replicas, 100)
    for index, step in enumerate(spec.strategy.steps):
        field = f"spec.strategy.steps[{index}].weight"
        if step.weight == 0:
            raise SpecError(field, f"weight 0 is impossible: {why}; start at the first weight, or use a router "
                                   "with a route (gatewayAPI) for a step without traffic")
        if replicas * step.weight % 100:
            needs = 100 // math.gcd(step.weight, 100)
            raise SpecError(field, f"weight {step.weight} would be {replicas * step.weight / 100:g} of {replicas} pods: "
                                   f"traffic is shared by pod count, so with {replicas} replicas the possible weights "
                                   f"are multiples of {unit}; weight {step.weight} needs replicas to be a multiple of {needs}")
    if spec.strategy.gates.before_traffic:
        raise SpecError("spec.strategy.gates.beforeTraffic", f"nothing can run before traffic: {why}; "
                                                             "use beforePromotion, or the gatewayAPI router")
    if spec.strategy.warmup.skip_analysis_for > 0:
        raise SpecError("spec.strategy.warmup.skipAnalysisFor", f"analysis cannot be skipped: {why}; "
                                                                 "make the readiness probe wait for the warm-up instead")


def _check_promotion_watch(spec: RolloutSpec) -> None:
    """A watch needs a stable that stays Ready outside the traffic, to route back to in one write."""
    router = spec.traffic_routing.router
    if spec.promotion_watch and router not in ROUTERS_WITH_STANDBY_STABLE:
        why = {"replicas": "the replicas router shares traffic by pods, so the stable has none left when the "
                           "canary serves everyone",
               "kserve": "KServe, not the operator, keeps the previous model's pods"}.get(router, "")
        raise SpecError("spec.strategy.promotion.watch", f"the {router} router cannot watch a canary at full traffic: "
                                                          f"{why}; set 0s, or use the gatewayAPI or istio router")


def _check_kserve_router(spec: RolloutSpec) -> None:
    """KServe splits traffic between its revisions but has no mirror."""
    if spec.traffic_routing.router != "kserve":
        return
    for index, step in enumerate(spec.strategy.steps):
        if step.mirror:
            raise SpecError(f"spec.strategy.steps[{index}].mirror", "the kserve router cannot mirror requests: "
                                                                     "use a weight step, or the istio router")


@dataclass(frozen=True)
class _PodProfile:
    """A Pod Security Standards profile, enforced by the operator itself (admission may be off)."""

    name: str
    whose: str  # whose pods, for messages
    volumes: frozenset[str] | None  # allowed volume types; None: all but hostPath
    capabilities: frozenset[str]  # may be added
    sysctls: frozenset[str]
    restricted: bool  # no privilege escalation, no root, no identity chosen by the spec


# The rollout's own pods (spec.template): "baseline", the author picks their server's ServiceAccount.
_BASELINE = _PodProfile(
    "baseline", "the rollout's pods", None,
    frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
               "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}),
    frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
               "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
               "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
               "net.ipv4.tcp_keepalive_probes"}),
    restricted=False)
# Job gates: "restricted", under the platform's ServiceAccount (they run code the spec names).
_RESTRICTED = _PodProfile(
    "restricted", "a gate's pod",
    frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
               "secret"}),
    frozenset({"NET_BIND_SERVICE"}), frozenset(), restricted=True)


# Pod Security's baseline: the SELinux types a pod may ask for (spc_t, for one, is unconfined).
_SELINUX_TYPES = frozenset({None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _check_security_context(context: Any, field: str, profile: _PodProfile) -> None:
    if context is None:
        return
    if not isinstance(context, dict):
        raise SpecError(field, "must be an object")

    def part(key: str) -> dict[str, Any]:
        value = context.get(key) or {}
        if not isinstance(value, dict):
            raise SpecError(f"{field}.{key}", "must be an object")
        return value

    sysctls = {str(entry.get("name")) if isinstance(entry, dict) else str(entry) for entry in context.get("sysctls") or []}
    selinux = part("seLinuxOptions")
    refusals = {
        "privileged": context.get("privileged") is True,
        "seccompProfile.type": part("seccompProfile").get("type") == "Unconfined",
        "appArmorProfile.type": part("appArmorProfile").get("type") == "Unconfined",
        "procMount": context.get("procMount") not in (None, "Default"),
        "sysctls": bool(sysctls - profile.sysctls),
        "windowsOptions.hostProcess": part("windowsOptions").get("hostProcess") is True,
        "seLinuxOptions.user": bool(selinux.get("user")),
        "seLinuxOptions.role": bool(selinux.get("role")),
        "seLinuxOptions.type": selinux.get("type") not in _SELINUX_TYPES,
        "allowPrivilegeEscalation": profile.restricted and context.get("allowPrivilegeEscalation") is True,
        "runAsUser": profile.restricted and context.get("runAsUser") == 0,
        "runAsNonRoot": profile.restricted and context.get("runAsNonRoot") is False,
    }
    for key, refused in refusals.items():
        if refused:
            raise SpecError(f"{field}.{key}", f"not allowed in {profile.whose} (Pod Security {profile.name!r})")
    added = set(part("capabilities").get("add") or ()) - profile.capabilities
    if added:
        raise SpecError(f"{field}.capabilities.add", f"{sorted(added)} not allowed in {profile.whose} "
                                                      f"(Pod Security {profile.name!r})")


def _check_pod(template: dict[str, Any], field: str, profile: _PodProfile, policy: PlatformPolicy) -> None:
    """Refuse what the profile does not allow in a pod template, naming the field."""
    pod = template.get("spec")
    if not isinstance(pod, dict) or not pod.get("containers"):
        raise SpecError(f"{field}.spec.containers", "needs at least one container")
    why = f"not allowed in {profile.whose} (Pod Security {profile.name!r})"
    for key, value in ((template.get("metadata") or {}).get("annotations") or {}).items():
        # Kubelets still honour AppArmor's annotation form beside appArmorProfile.
        if key.startswith(_APPARMOR_ANNOTATION) and not (value in ("", "runtime/default") or str(value).startswith("localhost/")):
            raise SpecError(f"{field}.metadata.annotations[{key}]", f"{value!r} {why}")
    field = f"{field}.spec"
    if profile.restricted:
        for key in ("serviceAccountName", "serviceAccount"):
            if key in pod:
                raise SpecError(f"{field}.{key}", f"{profile.whose} runs under the platform's ServiceAccount: remove it")
        if pod.get("automountServiceAccountToken") is True and not policy.gate_service_account_token:
            raise SpecError(f"{field}.automountServiceAccountToken", f"this platform mounts no token in {profile.whose}")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key) is True:
            raise SpecError(f"{field}.{key}", why)
    _check_security_context(pod.get("securityContext"), f"{field}.securityContext", profile)
    for index, volume in enumerate(pod.get("volumes") or []):
        if not isinstance(volume, dict):
            raise SpecError(f"{field}.volumes[{index}]", "must be an object")
        kinds = set(volume) - {"name"}
        refused = kinds - profile.volumes if profile.volumes is not None else kinds & {"hostPath"}
        if refused:
            raise SpecError(f"{field}.volumes[{index}].{sorted(refused)[0]}", why)
        if profile.restricted and not policy.gate_service_account_token:
            projected = volume.get("projected") or {}
            for source_index, source in enumerate((projected.get("sources") if isinstance(projected, dict) else None) or []):
                if isinstance(source, dict) and "serviceAccountToken" in source:
                    raise SpecError(f"{field}.volumes[{index}].projected.sources[{source_index}].serviceAccountToken",
                                    f"this platform mounts no token in {profile.whose}")
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for index, container in enumerate(pod.get(group) or []):
            where = f"{field}.{group}[{index}]"
            if not isinstance(container, dict):
                raise SpecError(where, "must be an object")
            for port_index, port in enumerate(container.get("ports") or []):
                if not isinstance(port, dict):
                    raise SpecError(f"{where}.ports[{port_index}]", "must be an object")
                if port.get("hostPort"):
                    raise SpecError(f"{where}.ports[{port_index}].hostPort", why)
            _check_security_context(container.get("securityContext"), f"{where}.securityContext", profile)


def _default(fields: dict[str, Any], key: str, value: Any) -> None:
    if fields.get(key) is None:
        fields[key] = value


def _harden_gate_pod(template: dict[str, Any], policy: PlatformPolicy) -> dict[str, Any]:
    """The gate's pod template as the operator runs it: the platform's identity, restricted defaults."""
    template = copy.deepcopy(template)
    pod = template["spec"]
    if policy.gate_service_account:
        pod["serviceAccountName"] = policy.gate_service_account
    pod["automountServiceAccountToken"] = policy.gate_service_account_token and pod.get("automountServiceAccountToken") is not False
    # A null field is as good as an absent one (that is how the API server reads it): both get the default.
    context = pod["securityContext"] = pod.get("securityContext") or {}
    _default(context, "runAsNonRoot", True)
    _default(context, "seccompProfile", {"type": "RuntimeDefault"})
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(group) or []:
            container_context = container["securityContext"] = container.get("securityContext") or {}
            _default(container_context, "allowPrivilegeEscalation", False)
            capabilities = container_context["capabilities"] = container_context.get("capabilities") or {}
            drop = list(capabilities.get("drop") or [])
            capabilities["drop"] = drop if "ALL" in drop else [*drop, "ALL"]
    return template


def _check_gates(spec: RolloutSpec, policy: PlatformPolicy) -> RolloutSpec:
    """Refuse gates the platform does not allow; give Job gates the platform's identity and restricted defaults."""
    gates = spec.strategy.gates
    stages = {}
    for stage, alias in (("before_traffic", "beforeTraffic"), ("before_promotion", "beforePromotion")):
        checked = []
        for index, gate in enumerate(getattr(gates, stage)):
            field = f"spec.strategy.gates.{alias}[{index}]"
            if gate.webhook is not None and not policy.webhook_allowed(gate.webhook.url):
                allowed = ", ".join(policy.allowed_webhook_urls) or "none (webhook gates are off)"
                raise SpecError(f"{field}.webhook.url", f"{gate.webhook.url} is not a webhook this platform allows; allowed: {allowed}")
            if gate.job is not None:
                _check_pod(gate.job.template, f"{field}.job.template", _RESTRICTED, policy)
                job = gate.job.model_copy(update={"template": _harden_gate_pod(gate.job.template, policy)})
                gate = gate.model_copy(update={"job": job})
            checked.append(gate)
        stages[stage] = tuple(checked)
    strategy = spec.strategy.model_copy(update={"gates": gates.model_copy(update=stages)})
    return spec.model_copy(update={"strategy": strategy})


def _check_notifications(spec: RolloutSpec, policy: PlatformPolicy) -> None:
    """PagerDuty's endpoint is in the spec, so it is checked here; the other URLs live in Secrets and
    are checked before each delivery (modelrollout.notify)."""
    for index, notification in enumerate(spec.notifications):
        endpoint = notification.endpoint
        if endpoint is not None and not policy.notification_allowed(endpoint):
            raise SpecError(f"spec.notifications[{index}].address",
                            f"{endpoint} is not a notification URL this platform allows; allowed: "
                            f"{', '.join(policy.allowed_notification_urls) or 'none'}")


def _check_model(spec: RolloutSpec) -> None:
    for key in ("name", "version"):
        value = getattr(spec.model, key)
        if value and not _MODEL_TEXT.fullmatch(value):
            raise SpecError(f"spec.model.{key}", "use letters, digits and . _ : / + - (at most 253, starting with a letter or digit)")
    version, limit = spec.model.version, LIMITS["model-version-label"].limit
    if len(version) > limit:
        raise SpecError("spec.model.version", f"{len(version)} characters, at most {limit} (it is a label value)")
    if version and not _LABEL_VALUE.fullmatch(version):
        raise SpecError("spec.model.version", "use letters, digits and - _ . starting and ending with a letter or digit "
                                              "(it is a label value)")


def _check_last_step(spec: RolloutSpec) -> None:
    """A release ends by sending users to the canary: a last step of weight 0 would wait forever."""
    last = len(spec.strategy.steps) - 1
    if spec.strategy.steps[last].weight == 0:
        raise SpecError(f"spec.strategy.steps[{last}].weight", "the last step must send users to the canary: "
                                                                "a weight above 0 (weights never go down)")


def applied_routing(spec: RolloutSpec) -> dict[str, Any]:
    """What handing traffic back to stable through this spec's router needs, kept in status."""
    # JSON mode: as status stores it (lists, not tuples), so that an unchanged routing compares equal.
    return {"trafficRouting": spec.traffic_routing.model_dump(mode="json", by_alias=True, exclude_none=True),
            "service": spec.service.model_dump(mode="json", by_alias=True, exclude_none=True),
            "replicas": spec.replicas}


def routing_spec(applied: Mapping[str, Any]) -> RolloutSpec:
    """A spec carrying only a recorded `applied_routing`: enough for a router's `finalize` (all
    traffic to stable) and `get_weight`, nothing else."""
    return RolloutSpec.model_construct(
        traffic_routing=TrafficRouting.model_validate(applied["trafficRouting"]),
        service=ServiceSpec.model_validate(applied["service"]), replicas=int(applied["replicas"]))


def parse_spec(raw: dict[str, Any], policy: PlatformPolicy | None = None) -> RolloutSpec:
    """Parse and validate a ModelRollout's spec under the platform's policy. Raises SpecError naming the first bad field.

    With no policy: an operator with no Prometheus configured and nothing else allowed.
    """
    policy = policy or PlatformPolicy()
    data = dict(raw or {})
    if isinstance(data.get("analysis"), dict):
        data["analysis"] = _apply_preset(data["analysis"])
    try:
        spec = RolloutSpec.model_validate(data, context={"policy": policy})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if not isinstance(p, str) or not p.startswith("function"))
        message = first["msg"].removeprefix("Value error, ")
        raise SpecError(_field_path(loc), message) from None
    _check_model(spec)
    _check_last_step(spec)
    _check_pod(spec.template, "spec.template", _BASELINE, policy)
    if not spec.analysis.metrics:
        raise SpecError("spec.analysis.metrics", "nothing to judge the canary by: list metrics, or name a preset "
                                                 "to use its default metrics (a rollout is never promoted unjudged)")
    spec = _check_prometheus(spec, policy)
    for index, metric in enumerate(spec.analysis.metrics):
        _check_metric(index, metric)
    _check_query("spec.analysis.samples.query", spec.analysis.samples.query)
    names = [m.name for m in spec.analysis.metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError("spec.analysis.metrics", f"metric names must be unique, repeated: {duplicates}")
    _check_replicas_router(spec)
    _check_kserve_router(spec)
    _check_promotion_watch(spec)
    _check_notifications(spec, policy)
    return _check_gates(spec, policy)
