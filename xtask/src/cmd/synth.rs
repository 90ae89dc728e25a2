//! `cargo xtask synth`: the environment's CloudFormation template, from the same stack model
//! the direct engine deploys. Without `--upload` it makes no AWS call at all: the template is
//! for account `${AWS::AccountId}` and region `${AWS::Region}`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use super::exit;
use crate::artifacts::{CodeArgs, CodeSource};
use crate::engine::Options;
use crate::session::{Global, Session, load_config};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write `<DIR>/<stack>.template.json` instead of printing the template on stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Upload the function zips the template references to the artifacts bucket (which an
    /// earlier `apply --engine cloudformation` created).
    #[arg(long)]
    pub upload: bool,
    #[command(flatten)]
    pub code: CodeArgs,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    let source = CodeSource::Deploy(args.code.clone());
    let (config, _) = load_config(g)?;
    let code = crate::artifacts::prepare(&config, &source).await?;
    let template = crate::cfn::synth(&config, &g.env, &code);
    let stack = stacks::names::Names::new(&config, &g.env, crate::cfn::template::ACCOUNT)
        .cloudformation_stack();
    let json = template.to_json();
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("{stack}.template.json"));
            std::fs::write(&path, format!("{json}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => println!("{json}"),
    }
    let counts = template.count_by_type();
    eprintln!(
        "{} resources: {}",
        counts.values().sum::<usize>(),
        counts
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if args.upload {
        // The zips were built above; reuse them rather than building again.
        let code = CodeArgs {
            skip_build: true,
            artifacts_dir: args.code.artifacts_dir.clone(),
        };
        let session = Session::open(g, Options::default(), &CodeSource::Deploy(code)).await?;
        let uploaded = crate::cfn::flow::upload(&session)
            .await
            .context("uploading the function zips (the artifacts bucket must exist: run `apply --engine cloudformation` once)")?;
        eprintln!(
            "artifacts: {uploaded} uploaded, {} already there",
            crate::cfn::artifacts(&session.stack).len() - uploaded
        );
    }
    Ok(exit::OK)
}
