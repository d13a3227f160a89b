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

{{/* The credential provider DaemonSet's pods: never the webhook's selector (its Service and PDB select
     by apw.selectorLabels). */}}
{{- define "apw.credentialProviderSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-credential-provider" (include "apw.name" .) | trunc 63 | trimSuffix "-" }}
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

{{/* JSON list of the generic token Secret names (config.instances[].tokenSecretName); [] when none. */}}
{{- define "apw.tokenSecretNames" -}}
{{- $names := list }}
{{- range .Values.config.instances }}
{{- with .tokenSecretName }}{{ $names = append $names . }}{{ end }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* JSON list of every Secret name the webhook writes in tenants' namespaces: pull, then token Secrets. */}}
{{- define "apw.secretNames" -}}
{{- toJson (concat (include "apw.pullSecretNames" . | fromJsonArray) (include "apw.tokenSecretNames" . | fromJsonArray)) }}
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
The audience of the ID tokens of an OIDC instance's exchange (config Instance.SubjectAudience):
oidc.subjectToken.audience, or else the instance's url. Called with the instance.
*/}}
{{- define "apw.subjectAudience" -}}
{{- default .url (dig "oidc" "subjectToken" "audience" "" .) }}
{{- end }}

{{/*
Audiences of the tokens the webhook requests for its OWN ServiceAccount, as a JSON list: one per instance of
exchange oidc, identity webhook and subjectToken.source serviceAccount (the defaults are exchange aws, identity
webhook, source serviceAccount). Non-empty: the Deployment sets POD_SERVICE_ACCOUNT, the Role grants a token of
this release's ServiceAccount by name, and the token policy admits these audiences for it (tokenpolicy.yaml).
*/}}
{{- define "apw.selfTokenAudiences" -}}
{{- $auds := list }}
{{- range .Values.config.instances }}
{{- if and (eq (toString (default "aws" .exchange)) "oidc")
      (or (eq (toString (default "webhook" .identity)) "webhook") (eq (toString (default "none" .fallback)) "webhook"))
      (eq (toString (default "serviceAccount" (dig "oidc" "subjectToken" "source" "" .))) "serviceAccount") }}
{{- $auds = append $auds (include "apw.subjectAudience" .) }}
{{- end }}
{{- end }}
{{- toJson (uniq $auds) }}
{{- end }}

{{/*
Audiences of the tokens the webhook requests for pods' ServiceAccounts (identity serviceAccount), as a JSON list:
sts.amazonaws.com when an instance of exchange aws (the default) has identity serviceAccount (IRSA's
AssumeRoleWithWebIdentity), and the subject audience of each instance of exchange oidc with identity
serviceAccount (the pod's ServiceAccount token is the ID token exchanged). The token policy admits exactly these
in opted-in namespaces. An OIDC audience that another party trusts (sts.amazonaws.com, Azure AD's, the API
server's usual ones) fails the render: such tokens of every opted-in ServiceAccount would be worth far more.
*/}}
{{- define "apw.perServiceAccountTokenAudiences" -}}
{{- $auds := list }}
{{- range .Values.config.instances }}
{{- if eq (toString (default "webhook" .identity)) "serviceAccount" }}
{{- if eq (toString (default "aws" .exchange)) "oidc" }}
{{- $aud := include "apw.subjectAudience" . }}
{{- /* Tokens of every opted-in ServiceAccount of an audience that something else trusts would be worth more than
an Artifactory pull: STS (IRSA roles), Azure AD (workload identity), the API server. */ -}}
{{- $trusted := dict "sts.amazonaws.com" "AWS STS (IRSA)" "api://AzureADTokenExchange" "Azure AD (workload identity)"
      "https://kubernetes.default.svc" "the API server"
      "https://kubernetes.default.svc.cluster.local" "the API server" }}
{{- $name := .name }}
{{- with get $trusted $aud }}
{{- fail (printf "%s %q, which %s also trusts: %s. %s %s"
      (printf "config.instances: %s has identity serviceAccount and exchange oidc with the subject audience" $name) $aud .
      "the chart would let the webhook request such tokens of every ServiceAccount in opted-in namespaces"
      "Give oidc.subjectToken.audience an audience of Artifactory's own (default: the instance's url)"
      "and configure the OIDC integration for it") }}
{{- end }}
{{- $auds = append $auds $aud }}
{{- else }}
{{- $auds = append $auds "sts.amazonaws.com" }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson (uniq $auds) }}
{{- end }}

{{/* "true" when some instance uses the AWS-signed exchange (exchange aws, the default), "" otherwise. */}}
{{- define "apw.awsExchange" -}}
{{- $on := false }}
{{- range .Values.config.instances }}
{{- if eq (toString (default "aws" .exchange)) "aws" }}
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
