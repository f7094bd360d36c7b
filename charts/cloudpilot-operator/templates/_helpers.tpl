{{/*
Names, labels and the few computed settings shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "cloudpilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: "<release>-<chart>", or just the release name when it
already contains the chart name, or fullnameOverride. Cut to 53 characters so that suffixes
such as "-metrics" keep names within Kubernetes' 63.
*/}}
{{- define "cloudpilot.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 53 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "cloudpilot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cloudpilot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cloudpilot
{{- end }}

{{/* The labels that select the operator's pods (immutable in a Deployment: keep them few). */}}
{{- define "cloudpilot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cloudpilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "cloudpilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cloudpilot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: [registry/]repository@digest, else [registry/]repository:tag (tag
defaults to appVersion). The digest wins: it names exactly one image, a tag can move.
*/}}
{{- define "cloudpilot.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The leader-election Lease's name. */}}
{{- define "cloudpilot.leaseName" -}}
{{- default (include "cloudpilot.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Checks that span several values (the schema checks each value alone). Rendered by the
Deployment so that a bad combination fails `helm install` / `helm template` with a message.
*/}}
{{- define "cloudpilot.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: two active operators would both create every missing VM" }}
{{- end }}
{{- if and (not .Values.watch.allNamespaces) (empty .Values.watch.namespaces) }}
{{- fail "watch.allNamespaces is false: list the namespaces to watch in watch.namespaces" }}
{{- end }}
{{- if and .Values.watch.allNamespaces (not (empty .Values.watch.namespaces)) }}
{{- fail "watch.namespaces is set: also set watch.allNamespaces to false (one or the other)" }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
{{- $le := .Values.leaderElection }}
{{- if not (lt (float64 $le.retryPeriodSeconds) (float64 $le.renewDeadlineSeconds)) }}
{{- fail "leaderElection: retryPeriodSeconds must be less than renewDeadlineSeconds" }}
{{- end }}
{{- if not (lt (float64 $le.renewDeadlineSeconds) (float64 $le.leaseDurationSeconds)) }}
{{- fail "leaderElection: renewDeadlineSeconds must be less than leaseDurationSeconds (the margin is the time the old leader has to stop)" }}
{{- end }}
{{- end }}
{{- if eq (int .Values.health.port) (int .Values.metrics.port) }}
{{- fail "health.port and metrics.port must differ" }}
{{- end }}
{{- end }}

{{/*
The RBAC rules the operator needs in every namespace it watches (a ClusterRole when it
watches all of them, a Role in each listed one). docs/deployment.md explains each rule;
tests/support/rbac.py lists the code that makes each call, and tests/unit/test_chart.py
checks that these rules are exactly those calls.
*/}}
{{- define "cloudpilot.namespacedRules" -}}
# kopf lists and watches pools, and patches them (finalizer, cloudpilot.io/* annotations).
- apiGroups: ["cloudpilot.io"]
  resources: ["cloudpilotpools"]
  verbs: ["list", "watch", "patch"]
# The operator writes status through the status subresource (kube/status.py).
- apiGroups: ["cloudpilot.io"]
  resources: ["cloudpilotpools/status"]
  verbs: ["patch"]
# The operator's Events (created, deleted, failed VMs) on the pool; a repeat within ten
# minutes patches the first one's count instead of posting another (kube/events.py).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Cloud credentials, the pilot wrapper and context templates, read by name (kube/secrets.py).
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get"]
{{- end }}
