//! `cargo xtask outputs`: what clients need to call the deployed app: the invoke URL and each
//! endpoint, the API key's id (its value only with `--show-secrets`), table and bucket names,
//! and the function aliases the API invokes. Reads only.
//!
//! The local environment has no `execute-api` host: its URL is the emulator's form,
//! `<endpoint>/restapis/<api id>/<stage>/_user_request_`.

use anyhow::{Context as _, Result};
use serde::Serialize;
use stacks::{Spec, api::ENDPOINTS};

use super::exit;
use crate::artifacts::CodeSource;
use crate::engine::Options;
use crate::providers::apigw;
use crate::session::{Global, Session, emulator_config};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Include the API key's value (a secret: do not paste it into tickets or logs).
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Serialize)]
struct Endpoint {
    method: String,
    path: String,
    url: Option<String>,
}

#[derive(Debug, Serialize)]
struct ApiKeyOut {
    name: String,
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

#[derive(Debug, Serialize)]
struct Outputs {
    env: String,
    account_id: String,
    region: String,
    api_name: String,
    /// `None` when the API is not deployed.
    invoke_url: Option<String>,
    endpoints: Vec<Endpoint>,
    api_key: ApiKeyOut,
    tables: Vec<String>,
    buckets: Vec<String>,
    function_aliases: Vec<String>,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    let session = Session::open(g, Options::default(), &CodeSource::None).await?;
    let out = collect(&session, args.show_secrets).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(&out);
    }
    Ok(exit::OK)
}

/// Names from the desired stack, ids from AWS: the API and its key are looked up together.
async fn collect(session: &Session, show_secrets: bool) -> Result<Outputs> {
    let ctx = &session.ctx;
    let mut tables = Vec::new();
    let mut buckets = Vec::new();
    let mut aliases = Vec::new();
    let mut api_name = String::new();
    let mut stage = session.config.api.stage_name.clone();
    let mut key_name = String::new();
    for r in &session.stack.resources {
        match &r.spec {
            Spec::Table(t) => tables.push(t.name.clone()),
            Spec::Bucket(b) => buckets.push(b.name.clone()),
            Spec::RestApi(a) => api_name = a.name.clone(),
            Spec::Function(f) => aliases.push(format!(
                "arn:{}:lambda:{}:{}:function:{}:{}",
                crate::providers::partition(&ctx.region),
                ctx.region,
                ctx.account_id,
                f.name,
                f.alias
            )),
            Spec::ApiStage(s) => stage = s.stage_name.clone(),
            Spec::ApiKey(k) => key_name = k.name.clone(),
            _ => {}
        }
    }
    let (api, key) = tokio::try_join!(
        apigw::find_rest_api(ctx, &api_name),
        apigw::find_api_key(ctx, &key_name)
    )?;
    let api_id = api.and_then(|a| a.id().map(str::to_string));
    let invoke_url = api_id.map(|id| invoke_url(session, &id, &stage));
    let key_id = key.and_then(|k| k.id().map(str::to_string));
    let value = match (&key_id, show_secrets) {
        (Some(id), true) => ctx
            .aws
            .apigateway
            .get_api_key()
            .api_key(id)
            .include_value(true)
            .send()
            .await
            .context("GetApiKey")?
            .value()
            .map(str::to_string),
        _ => None,
    };
    Ok(Outputs {
        env: session.env.clone(),
        account_id: ctx.account_id.clone(),
        region: ctx.region.clone(),
        invoke_url: invoke_url.clone(),
        endpoints: ENDPOINTS
            .iter()
            .map(|e| Endpoint {
                method: e.method.into(),
                path: e.path.into(),
                url: invoke_url.as_ref().map(|u| format!("{u}{}", e.path)),
            })
            .collect(),
        api_name,
        api_key: ApiKeyOut {
            name: key_name,
            id: key_id,
            value,
        },
        tables,
        buckets,
        function_aliases: aliases,
    })
}

/// The stage's base URL: the emulator's path form locally, `execute-api` on AWS.
fn invoke_url(session: &Session, api_id: &str, stage: &str) -> String {
    let region = &session.ctx.region;
    match emulator_config(&session.config) {
        Some(ec) => format!("{}/restapis/{api_id}/{stage}/_user_request_", ec.endpoint()),
        None => format!(
            "https://{api_id}.execute-api.{region}.{}/{stage}",
            if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            }
        ),
    }
}

fn print_text(out: &Outputs) {
    let none = || "(not deployed)".to_string();
    println!(
        "env {} in account {} region {}",
        out.env, out.account_id, out.region
    );
    println!(
        "invoke URL: {}",
        out.invoke_url.clone().unwrap_or_else(none)
    );
    for e in &out.endpoints {
        println!(
            "  {:<4} {}",
            e.method,
            e.url.clone().unwrap_or_else(|| e.path.clone())
        );
    }
    println!(
        "API key {}: id {}{}",
        out.api_key.name,
        out.api_key.id.clone().unwrap_or_else(none),
        match &out.api_key.value {
            Some(v) => format!(", value {v}"),
            None if out.api_key.id.is_some() => " (value: pass --show-secrets)".into(),
            None => String::new(),
        }
    );
    println!("tables: {}", out.tables.join(", "));
    println!("buckets: {}", out.buckets.join(", "));
    println!("function aliases:");
    for a in &out.function_aliases {
        println!("  {a}");
    }
}
