{{/* The controller's image: controller.image, or the chart's own version. */}}
{{- define "meshfed.controllerImage" -}}
{{- .Values.controller.image | default (printf "meshfed/meshfed-controller:%s" .Chart.AppVersion) -}}
{{- end -}}

{{/* What values.schema.json cannot say; `meshfed install` refuses the same. */}}
{{- define "meshfed.validate" -}}
{{- if and .Values.gateway.addresses (not .Values.network) -}}
{{- fail "gateway.addresses needs network: a gateway is how clusters on other networks reach this one" -}}
{{- end -}}
{{- end -}}
