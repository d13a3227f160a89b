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

{{/*
"true" when some instance has identity serviceAccount (config.instances[].identity), "" otherwise: the chart then
adds the per-ServiceAccount rules (rbac.yaml), widens the Secret write policy (secretpolicy.yaml) and adds the token
request policy (tokenpolicy.yaml). Webhook-identity charts render none of it.
*/}}
{{- define "apw.perServiceAccount" -}}
{{- $on := false }}
{{- range .Values.config.instances }}
{{- if eq (toString (default "webhook" .identity)) "serviceAccount" }}
{{- $on = true }}
{{- end }}
{{- end }}
{{- if $on }}true{{ end }}
{{- end }}

{{/*
Prefixes of the per-ServiceAccount pull Secrets, "<secretName>-" of each serviceAccount instance, as a JSON list:
a ServiceAccount's Secret is <secretName>-<serviceAccount>, cut to 236 characters and ending in a hash when longer
than 253: it keeps the prefix as long as secretName has at most 234 characters.
*/}}
{{- define "apw.perServiceAccountPrefixes" -}}
{{- $prefixes := list }}
{{- range .Values.config.instances }}
{{- if eq (toString (default "webhook" .identity)) "serviceAccount" }}
{{- $prefixes = append $prefixes (printf "%s-" (default "artifactory-pull" .secretName)) }}
{{- end }}
{{- end }}
{{- toJson (uniq $prefixes) }}
{{- end }}

{{/* Namespaces whose pods the webhook never mutates: webhook.excludeNamespaces and the release namespace. */}}
{{- define "apw.excludedNamespaces" -}}
{{- uniq (append .Values.webhook.excludeNamespaces .Release.Namespace) | toJson }}
{{- end }}
