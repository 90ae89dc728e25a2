//! `cargo xtask emulator start|stop|status|reset`: the local moto server, explicitly.

use anyhow::{Context as _, Result, bail};

use super::exit;
use crate::emulator::{self, Started, Stopped};
use crate::session::{Global, emulator_config, load_config};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start the emulator if nothing answers at the configured endpoint.
    Start,
    /// Stop the emulator xtask started (never another process).
    Stop,
    /// Show whether the emulator answers, and whether xtask started it.
    Status,
    /// Wipe all of the emulator's state.
    Reset,
}

pub async fn run(g: &Global, cmd: &Command) -> Result<u8> {
    let (config, _) = load_config(g)?;
    let Some(ec) = emulator_config(&config) else {
        bail!(
            "env `{}` has no [emulator] section: it runs against AWS",
            g.env
        );
    };
    match cmd {
        Command::Start => match emulator::ensure_running(&ec).await? {
            Started::AlreadyRunning => println!("emulator already running at {}", ec.endpoint()),
            Started::Started { pid } => {
                println!("emulator started at {} (pid {pid})", ec.endpoint())
            }
        },
        Command::Stop => match emulator::stop(&ec).await? {
            Stopped::Stopped { pid } => println!("emulator stopped (pid {pid})"),
            Stopped::NotRunning => println!("emulator was not running"),
        },
        Command::Status => {
            let s = emulator::status(&ec).await;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"endpoint": s.endpoint, "healthy": s.healthy, "pid": s.pid, "version": s.version})
                );
            } else {
                println!("{s}");
            }
            return Ok(if s.healthy { exit::OK } else { exit::ERROR });
        }
        Command::Reset => {
            emulator::reset(&ec.endpoint())
                .await
                .context("resetting the emulator")?;
            println!("emulator state wiped");
        }
    }
    Ok(exit::OK)
}
