{{/* Names and labels shared by the templates. */}}

{{- define "syncmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "syncmesh.fullname" -}}
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

{{- define "syncmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart creates, but the selector labels. */}}
{{- define "syncmesh.commonLabels" -}}
helm.sh/chart: {{ include "syncmesh.chart" . }}
app.kubernetes.io/part-of: syncmesh
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of objects that no selector picks. */}}
{{- define "syncmesh.labels" -}}
{{ include "syncmesh.commonLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator pods: stable, used in the Deployment's selector. */}}
{{- define "syncmesh.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "syncmesh.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "syncmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "syncmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "syncmesh.leaseName" -}}
{{- default (printf "%s-leader" (include "syncmesh.fullname" .)) .Values.operator.leaseName }}
{{- end }}

{{- define "syncmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
