{{/*
Names are fixed, not prefixed with the release name: the operator's code refers to
portcullis-operator (its Lease), portcullis-proxy (the ClusterRole it binds per Database) and
portcullis-ca (its CA Secret). So one release per cluster.
*/}}

{{- define "portcullis.operatorName" -}}portcullis-operator{{- end }}

{{- define "portcullis.serviceAccountName" -}}
{{- default "portcullis-operator" .Values.serviceAccount.name }}
{{- end }}

{{/* Labels of every object; call with (dict "ctx" $ "name" "portcullis-operator"). */}}
{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: portcullis
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}

{{/* An image reference from (dict "repository" … "tag" … "digest" …). */}}
{{- define "portcullis.imageRef" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end }}

{{- define "portcullis.image" -}}
{{- include "portcullis.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) }}
{{- end }}

{{- define "portcullis.proxyImage" -}}
{{- $p := .Values.proxy.image -}}
{{- if or $p.repository $p.tag $p.digest -}}
{{- include "portcullis.imageRef" (dict "repository" (default .Values.image.repository $p.repository) "tag" (default (default .Chart.AppVersion .Values.image.tag) $p.tag) "digest" $p.digest) }}
{{- else -}}
{{- include "portcullis.image" . }}
{{- end -}}
{{- end }}

{{/* The one namespace watched, or "" for all. */}}
{{- define "portcullis.watchNamespace" -}}
{{- if gt (len .Values.watchNamespaces) 1 -}}
{{- fail "watchNamespaces: only one namespace is supported for now" -}}
{{- end -}}
{{- first .Values.watchNamespaces | default "" -}}
{{- end }}

{{/*
The proxy defaults file (--proxy-defaults): only the keys that are set, so the operator's
own defaults apply to the rest. Its sha256 rolls the operator on change.
*/}}
{{- define "portcullis.proxyDefaults" -}}
{{- $p := .Values.proxy -}}
{{- $d := dict "replicas" $p.replicas "imagePullPolicy" (default .Values.image.pullPolicy $p.imagePullPolicy) -}}
{{- range $k := list "resources" "nodeSelector" "tolerations" "affinity" "priorityClassName" "imagePullSecrets" "env" -}}
{{- with index $p $k }}{{ $_ := set $d $k . }}{{ end -}}
{{- end -}}
{{- toYaml $d }}
{{- end }}

{{/* Checks the values a schema cannot express. */}}
{{- define "portcullis.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection) -}}
{{- fail "operator.replicas > 1 needs operator.leaderElection=true (otherwise every replica reconciles)" -}}
{{- end -}}
{{- end }}

{{/*
What the operator does in a namespace it watches (the ClusterRole's rules, or a Role's in
the namespace it is limited to): read its three resources and write their status; create,
patch and delete the Databases a DatabaseDiscovery owns; the
proxy's ServiceAccount, ConfigMap, Secret, Service, Deployment and RoleBinding; `bind` on
ClusterRole portcullis-proxy only (to bind proxies to it without holding its permissions);
Warning Events.
*/}}
{{- define "portcullis.namespacedRules" -}}
- apiGroups: ["portcullis.io"]
  resources: ["databases", "accessroles", "databasediscoveries"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["portcullis.io"]
  resources: ["databases/status", "accessroles/status", "databasediscoveries/status"]
  verbs: ["get", "patch", "update"]
# The Databases a DatabaseDiscovery owns.
- apiGroups: ["portcullis.io"]
  resources: ["databases"]
  verbs: ["create", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts", "configmaps", "secrets", "services"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  verbs: ["bind"]
  resourceNames: ["portcullis-proxy"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
The CertificateSigningRequest signer: read CSRs, approve or deny them and write the
certificate, for signer portcullis.io/client only.
*/}}
{{- define "portcullis.csrRules" -}}
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests/approval", "certificatesigningrequests/status"]
  verbs: ["update", "patch"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["signers"]
  verbs: ["approve", "sign"]
  resourceNames: ["portcullis.io/client"]
{{- end }}

{{- define "portcullis.operatorSubject" -}}
- kind: ServiceAccount
  name: {{ include "portcullis.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}
