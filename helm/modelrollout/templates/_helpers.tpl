{{/* Chart name. */}}
{{- define "modelrollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-qualified unless the release name already contains the chart name. */}}
{{- define "modelrollout.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ include "modelrollout.chart" . }}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modelrollout
{{- end -}}

{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.peeringName" -}}
{{- default (include "modelrollout.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* Sanity checks that values.schema.json cannot express. */}}
{{- define "modelrollout.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.peering.enabled) -}}
{{- fail "replicas > 1 needs peering.enabled=true: without Kopf peering, every replica would act on every ModelRollout" -}}
{{- end -}}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) -}}
{{- fail "watchNamespaces lists a namespace twice" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled: a ServiceMonitor selects the metrics Service" -}}
{{- end -}}
{{- end -}}

{{/*
The rules for namespaced resources: the same in the ClusterRole (cluster-wide mode)
and in each Role (namespaced mode). Exact verbs on exact resources; no wildcards.
*/}}
{{- define "modelrollout.namespacedRules" -}}
# The custom resource: watch it, patch finalizers/annotations (never the spec).
- apiGroups: ["modelrollout.io"]
  resources: ["modelrollouts"]
  verbs: ["get", "list", "watch", "patch"]
# Everything the operator learns goes to status.
- apiGroups: ["modelrollout.io"]
  resources: ["modelrollouts/status"]
  verbs: ["get", "patch", "update"]
# The stable and canary Deployments the operator owns.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# <name>-stable, <name>-canary (and the shared) Services.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
{{- if .Values.rbac.gatewayAPI }}
# Gateway API router: the HTTPRoute's backend weights (the route itself is the user's).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch", "update"]
{{- end }}
{{- if .Values.rbac.istio }}
# Istio router: the VirtualService's route weights and mirror (the VirtualService is the user's).
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "patch", "update"]
{{- end }}
{{- if .Values.rbac.kserve }}
# KServe router: the InferenceService's predictor and canary entries (KServe runs the pods).
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "patch", "update"]
{{- end }}
# Analysis jobs (e.g. offline quality checks).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Every decision is explained in an event (Kopf posts core/v1 events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- with .Values.notifications.secretNames }}
# Notifications: read the receivers' URLs and routing keys, from these Secrets only (by name).
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: {{ toJson . }}
  verbs: ["get"]
{{- end }}
{{- with .Values.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}
