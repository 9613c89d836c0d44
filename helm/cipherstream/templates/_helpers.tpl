{{- define "cipherstream.labels" -}}
app.kubernetes.io/part-of: cipherstream
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }}
cipherstream.io/party: {{ .root.Values.party }}
{{- end -}}

{{- define "cipherstream.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "cipherstream.fullname" -}}
{{ .root.Release.Name }}-{{ .name }}
{{- end -}}
