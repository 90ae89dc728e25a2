//! Following the control plane: the data plane serves what is deployed, and swaps in new
//! function versions or a new stage deployment when an apply moves an alias or the stage.
//!
//! Every [`REFRESH`] (or at once when asked) the [`Loader`] reads the aliases and the stage's
//! deployment; when either moved it loads the new versions and the gateway serves them from
//! then on. Requests in flight finish on the old processes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use stacks::names::Names;
use tokio::sync::{Notify, watch};

use super::deployed::{self, DeployedApi};
use super::gateway::{Gateway, Served};
use super::runtime::{LocalConfig, LocalLambda};
use crate::aws::Clients;

/// How often the data plane checks whether aliases or the stage moved.
pub const REFRESH: Duration = Duration::from_secs(2);
/// The alias the API and the stream trigger invoke.
const ALIAS: &str = stacks::invoice_app::ALIAS;

/// What identifies a deployment the data plane serves: each function's alias version and the
/// stage's deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Versions {
    /// Function name -> the version its alias points to.
    pub functions: BTreeMap<String, String>,
    pub deployment: String,
}

/// Reads the deployed state and starts a runtime for it.
#[derive(Clone)]
pub struct Loader {
    pub(crate) aws: Clients,
    pub(crate) names: Names,
    stage: String,
    cache: PathBuf,
    lambda: LocalConfig,
}

impl Loader {
    /// Serves stage `stage` of the environment `names` name, running the functions as
    /// `lambda` says (its function list is filled from what is deployed), with code fetched
    /// into `cache`.
    pub fn new(
        aws: Clients,
        names: Names,
        stage: impl Into<String>,
        cache: PathBuf,
        lambda: LocalConfig,
    ) -> Loader {
        Loader {
            aws,
            names,
            stage: stage.into(),
            cache,
            lambda,
        }
    }

    async fn read_api(&self) -> Result<DeployedApi> {
        deployed::read_api(&self.aws, &self.names.rest_api(), &self.stage)
            .await?
            .with_context(|| {
                format!(
                    "REST API {} stage {} is not deployed",
                    self.names.rest_api(),
                    self.stage
                )
            })
    }

    /// What is deployed now, without loading it.
    async fn versions(&self) -> Result<Versions> {
        let mut functions = BTreeMap::new();
        for name in deployed::function_names(&self.names) {
            let alias = self
                .aws
                .lambda
                .get_alias()
                .function_name(&name)
                .name(ALIAS)
                .send()
                .await
                .with_context(|| format!("GetAlias {name}:{ALIAS}"))?;
            functions.insert(
                name,
                alias.function_version().unwrap_or_default().to_string(),
            );
        }
        let stage = self
            .aws
            .apigateway
            .get_stage()
            .rest_api_id(self.read_api_id().await?)
            .stage_name(&self.stage)
            .send()
            .await
            .context("GetStage")?;
        Ok(Versions {
            functions,
            deployment: stage.deployment_id().unwrap_or_default().to_string(),
        })
    }

    async fn read_api_id(&self) -> Result<String> {
        let name = self.names.rest_api();
        crate::providers::apigw::find_rest_api_with(&self.aws.apigateway, &name)
            .await?
            .and_then(|a| a.id().map(str::to_string))
            .with_context(|| format!("REST API {name} is not deployed"))
    }

    /// Reads what is deployed and starts a runtime for its function versions.
    pub async fn load(&self) -> Result<(Served, Versions)> {
        let api = self.read_api().await?;
        let mut runtimes = Vec::new();
        let mut functions = BTreeMap::new();
        for name in deployed::function_names(&self.names) {
            let f = deployed::read_function(&self.aws, &name, ALIAS)
                .await?
                .with_context(|| format!("function {name} has no `{ALIAS}` alias"))?;
            let zip =
                deployed::fetch_code(&self.aws, &self.names.artifacts_bucket(), &f, &self.cache)
                    .await?;
            functions.insert(name, f.version.clone());
            runtimes.push(f.runtime_config(zip));
        }
        let mut config = self.lambda.clone();
        config.functions = runtimes;
        let lambda = LocalLambda::start(config).await?;
        let versions = Versions {
            functions,
            deployment: api.deployment_id.clone(),
        };
        Ok((Served { api, lambda }, versions))
    }
}

/// Swaps in new function versions or a new stage deployment when the control plane moves.
pub async fn follow_deployments(
    loader: Loader,
    gateway: Gateway,
    mut current: Versions,
    now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = now.notified() => {}
            _ = stop.changed() => return,
        }
        let seen = match loader.versions().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("checking the deployment: {e:#}");
                continue;
            }
        };
        if seen == current {
            continue;
        }
        match loader.load().await {
            Ok((served, versions)) => {
                let changed: Vec<String> = versions
                    .functions
                    .iter()
                    .filter(|(f, v)| current.functions.get(*f) != Some(v))
                    .map(|(f, v)| format!("{f} -> version {v}"))
                    .collect();
                let old = gateway.replace(served);
                eprintln!(
                    "reloaded: {}{}",
                    if changed.is_empty() {
                        "API deployment".to_string()
                    } else {
                        changed.join(", ")
                    },
                    if versions.deployment != current.deployment && !changed.is_empty() {
                        " and the API deployment"
                    } else {
                        ""
                    }
                );
                current = versions;
                // In-flight requests hold their own reference; the old processes end with the
                // last of them.
                drop(old);
            }
            Err(e) => tracing::warn!("loading the new deployment: {e:#}"),
        }
    }
}
