{{/* The release's base name: the release name when it holds the chart's, else both. */}}
{{- define "mtlsd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The webhook's Deployment, Service, certificate Secret and configuration. */}}
{{- define "mtlsd.webhook" -}}
{{- printf "%s-webhook" (include "mtlsd.fullname" .) -}}
{{- end -}}

{{/* The Service's DNS names, which the serving certificate must carry. */}}
{{- define "mtlsd.webhookDNSNames" -}}
{{- $svc := include "mtlsd.webhook" . -}}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson -}}
{{- end -}}

{{- define "mtlsd.labels" -}}
app.kubernetes.io/name: mtlsd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mtlsd.selectorLabels" -}}
app.kubernetes.io/name: mtlsd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "mtlsd.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The injector configuration (docs/injection.md) from the values. Lists that are
     empty are left out: the file takes only non-empty ones. */}}
{{- define "mtlsd.injectorConfig" -}}
{{- $v := .Values.injector -}}
{{- $c := dict "image" ($v.image | default (include "mtlsd.image" .)) "image_pull_policy" .Values.image.pullPolicy "trust_domain" $v.trustDomain "namespace" .Release.Namespace "native_sidecar" $v.nativeSidecar "exclude_api_server" $v.excludeApiServer "ipv6" $v.ipv6 "certs" (dict "csi_driver" $v.csiDriver) -}}
{{- with $v.resources }}{{- $_ := set $c "resources" . }}{{- end }}
{{- with $v.excludeInboundPorts }}{{- $_ := set $c "exclude_inbound_ports" . }}{{- end }}
{{- with $v.excludeOutboundPorts }}{{- $_ := set $c "exclude_outbound_ports" . }}{{- end }}
{{- with $v.excludeOutboundCIDRs }}{{- $_ := set $c "exclude_outbound_cidrs" . }}{{- end }}
{{- with $v.includeOutboundCIDRs }}{{- $_ := set $c "include_outbound_cidrs" . }}{{- end }}
{{- with $v.sidecar }}{{- $_ := set $c "sidecar" . }}{{- end }}
{{- toPrettyJson $c -}}
{{- end -}}
