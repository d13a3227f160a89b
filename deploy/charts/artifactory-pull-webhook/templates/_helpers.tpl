{{- define "apw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "apw.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "apw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "apw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "apw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "apw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Secret holding the serving certificate: self-managed or cert-manager's. */}}
{{- define "apw.certSecretName" -}}
{{- if eq .Values.certificates.mode "self" }}
{{- default (printf "%s-serving-cert" (include "apw.fullname" .)) .Values.certificates.self.secretName }}
{{- else }}
{{- printf "%s-tls" (include "apw.fullname" .) }}
{{- end }}
{{- end }}

{{/* Pull Secret names written per namespace, one per instance (config default: artifactory-pull). */}}
{{- define "apw.pullSecretNames" -}}
{{- $names := list }}
{{- range .Values.config.instances }}
{{- $names = append $names (default "artifactory-pull" .secretName) }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* "key=value" labels of the config, split; defaults as in the webhook's config loader. */}}
{{- define "apw.optInKey" -}}{{ index (splitList "=" (default "artifactory-pull-webhook/inject=enabled" .Values.config.namespaceLabel)) 0 }}{{- end }}
{{- define "apw.optInValue" -}}{{ index (splitList "=" (default "artifactory-pull-webhook/inject=enabled" .Values.config.namespaceLabel)) 1 }}{{- end }}
{{- define "apw.optOutKey" -}}{{ index (splitList "=" (default "artifactory-pull-webhook/inject=disabled" .Values.config.podOptOutLabel)) 0 }}{{- end }}
{{- define "apw.optOutValue" -}}{{ index (splitList "=" (default "artifactory-pull-webhook/inject=disabled" .Values.config.podOptOutLabel)) 1 }}{{- end }}
