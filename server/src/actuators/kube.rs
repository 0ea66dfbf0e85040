//! Scaling Deployments and StatefulSets through the `scale` subresource.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};

use super::ActuateError;
use crate::config::KubeSettings;
use crate::domain::policy::{PolicySpec, TargetKind};

/// A Kubernetes client for scaling.
#[derive(Clone)]
pub struct KubeScaler {
    client: kube::Client,
}

impl KubeScaler {
    /// Builds a client from settings: explicit URL, else (if `discover`) in-cluster or kubeconfig; `None`
    /// when Kubernetes is not configured.
    pub async fn from_settings(s: &KubeSettings) -> Result<Option<Self>, ActuateError> {
        let config = if let Some(url) = &s.api_url {
            let uri = url.parse().map_err(|e| ActuateError::Kube(format!("kube.api_url {url:?}: {e}")))?;
            let mut c = kube::Config::new(uri);
            if !s.token.is_empty() {
                c.auth_info.token = Some(s.token.expose().to_string().into());
            }
            c
        } else if s.discover {
            kube::Config::infer().await.map_err(|e| ActuateError::Kube(format!("discover: {e}")))?
        } else {
            return Ok(None);
        };
        let client = kube::Client::try_from(config).map_err(|e| ActuateError::Kube(e.to_string()))?;
        Ok(Some(Self { client }))
    }

    fn ns(spec: &PolicySpec) -> &str {
        spec.target.namespace.as_deref().unwrap_or("default")
    }

    /// `spec.replicas` of the target's scale subresource.
    pub async fn current(&self, spec: &PolicySpec) -> Result<u32, ActuateError> {
        let name = &spec.target.name;
        let scale = match spec.target.kind {
            TargetKind::Statefulset => {
                Api::<StatefulSet>::namespaced(self.client.clone(), Self::ns(spec)).get_scale(name).await
            }
            _ => Api::<Deployment>::namespaced(self.client.clone(), Self::ns(spec)).get_scale(name).await,
        }
        .map_err(|e| ActuateError::Kube(e.to_string()))?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32)
    }

    /// `PATCH .../{deployments|statefulsets}/NAME/scale` with `{"spec":{"replicas":N}}` (merge patch).
    pub async fn scale(&self, spec: &PolicySpec, replicas: u32) -> Result<(), ActuateError> {
        let name = &spec.target.name;
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        let pp = PatchParams::default();
        match spec.target.kind {
            TargetKind::Statefulset => {
                Api::<StatefulSet>::namespaced(self.client.clone(), Self::ns(spec)).patch_scale(name, &pp, &patch).await
            }
            _ => {
                Api::<Deployment>::namespaced(self.client.clone(), Self::ns(spec)).patch_scale(name, &pp, &patch).await
            }
        }
        .map_err(|e| ActuateError::Kube(e.to_string()))?;
        Ok(())
    }
}
