{{- define "tollway.name" -}}tollway{{- end -}}

{{- define "tollway.fullname" -}}
{{- if contains "tollway" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-tollway" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "tollway.labels" -}}
app.kubernetes.io/name: tollway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tollway.selector" -}}
app.kubernetes.io/name: tollway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tollway.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "tollway.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}{{ join "," .Values.watchNamespaces }}{{ else }}{{ .Release.Namespace }}{{ end -}}
{{- end -}}

{{/* Pod and container security settings shared by every workload: non-root, read-only, no capabilities. */}}
{{- define "tollway.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tollway.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "tollway.redisURL" -}}
{{- if eq .Values.redis.mode "builtin" -}}redis://{{ include "tollway.fullname" . }}-redis:6379/0
{{- else if and (eq .Values.redis.mode "external") (eq .Values.redis.external.topology "sentinel") -}}{{ .Values.redis.external.url | default "redis://" }}
{{- else if eq .Values.redis.mode "external" -}}{{ required "redis.external.url is required when redis.mode is external" .Values.redis.external.url }}
{{- end -}}
{{- end -}}
