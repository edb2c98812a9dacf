//! `skiff volume create|ls|inspect|rm|prune`: Docker's volume commands over the engine's
//! volumes ([`skiff_engine::volume`]). `rm` and `inspect` go on past a bad name and exit 1
//! if any failed; a volume some container uses is never removed.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use skiff_engine::VolumeError;
use skiff_engine::template::Template;

use super::table::human_size;
use super::{EngineRoot, confirm, report, table};

/// `skiff volume`.
#[derive(Debug, Args)]
pub struct VolumeArgs {
    #[command(flatten)]
    root: EngineRoot,
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// Create a volume (a random name if none) and print its name.
    Create {
        /// The driver (only local exists).
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Set a label: KEY=VALUE.
        #[arg(long)]
        label: Vec<String>,
        /// Driver options (the local driver here takes none).
        #[arg(short, long)]
        opt: Vec<String>,
        /// The name.
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Print only names.
        #[arg(short, long)]
        quiet: bool,
        /// Filter: dangling=true|false, name=TEXT, label=KEY[=VALUE].
        #[arg(short, long)]
        filter: Vec<String>,
    },
    /// Show volumes' details as JSON or through a Go template.
    Inspect {
        /// A Go template ({{.Mountpoint}}, {{json .Labels}} ...).
        #[arg(short, long)]
        format: Option<String>,
        /// The volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes (never one a container uses).
    #[command(alias = "remove")]
    Rm {
        /// Do not complain about missing volumes.
        #[arg(short, long)]
        force: bool,
        /// The volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove the anonymous volumes no container uses (every unused one with -a).
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Named volumes too.
        #[arg(short, long)]
        all: bool,
    },
}

/// `KEY=VALUE` (or `KEY`, an empty value) labels.
pub(crate) fn parse_labels(labels: &[String]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

impl VolumeArgs {
    /// Runs the volume command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let engine = self.root.open()?;
        match self.command {
            VolumeCommand::Create {
                driver,
                label,
                opt,
                name,
            } => {
                if driver != "local" {
                    return Ok(report(&VolumeError::UnknownDriver { driver }.into(), 1));
                }
                if !opt.is_empty() {
                    eprintln!(
                        "Error: the local driver here takes no options (-o {}): drop them",
                        opt.join(" -o ")
                    );
                    return Ok(ExitCode::FAILURE);
                }
                match engine
                    .volumes()
                    .and_then(|v| v.create(name.as_deref(), &parse_labels(&label)))
                {
                    Ok(volume) => {
                        println!("{}", volume.record.name);
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(err) => Ok(report(&err, 1)),
                }
            }
            VolumeCommand::Ls { quiet, filter } => {
                let filters = Filters::parse(&filter)?;
                let used: Vec<String> = engine
                    .list()?
                    .into_iter()
                    .flat_map(|c| c.config.volumes.into_iter().map(|v| v.name))
                    .collect();
                let volumes: Vec<_> = engine
                    .volumes()?
                    .list()?
                    .into_iter()
                    .filter(|v| filters.keep(v, used.contains(&v.record.name)))
                    .collect();
                if quiet {
                    for v in &volumes {
                        println!("{}", v.record.name);
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                rows.extend(
                    volumes
                        .iter()
                        .map(|v| vec!["local".to_string(), v.record.name.clone()]),
                );
                print!("{}", table::render(&rows));
                Ok(ExitCode::SUCCESS)
            }
            VolumeCommand::Inspect { format, volumes } => {
                let template = format.as_deref().map(Template::parse).transpose()?;
                let store = engine.volumes()?;
                let mut documents = Vec::new();
                let mut failed = false;
                for name in &volumes {
                    match store.get(name) {
                        Ok(volume) => match &template {
                            Some(t) => println!("{}", t.render(&volume.inspect())?),
                            None => documents.push(volume.inspect()),
                        },
                        Err(err) => {
                            report(&err, 1);
                            failed = true;
                        }
                    }
                }
                if template.is_none() {
                    println!("{}", skiff_engine::inspect::to_pretty_json(&documents));
                }
                Ok(failure_if(failed))
            }
            VolumeCommand::Rm { force, volumes } => {
                let mut failed = false;
                for name in &volumes {
                    match engine.remove_volume(name, force) {
                        Ok(_) => println!("{name}"),
                        Err(err) => {
                            report(&err, 1);
                            failed = true;
                        }
                    }
                }
                Ok(failure_if(failed))
            }
            VolumeCommand::Prune { force, all } => {
                let what = if all { "all" } else { "anonymous" };
                let warning = format!(
                    "WARNING! This will remove {what} local volumes not used by at least one container."
                );
                if !force && !confirm(&warning)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let pruned = engine.prune_volumes(all)?;
                if !pruned.removed.is_empty() {
                    println!("Deleted Volumes:");
                    for name in &pruned.removed {
                        println!("{name}");
                    }
                    println!();
                }
                println!("Total reclaimed space: {}", human_size(pruned.bytes));
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn failure_if(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `volume ls --filter`s: every one must hold.
#[derive(Debug, Default)]
struct Filters {
    dangling: Option<bool>,
    names: Vec<String>,
    labels: Vec<(String, Option<String>)>,
}

impl Filters {
    fn parse(filters: &[String]) -> anyhow::Result<Filters> {
        let mut out = Filters::default();
        for filter in filters {
            match filter.split_once('=') {
                Some(("dangling", value)) => {
                    out.dangling = Some(match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => anyhow::bail!(
                            "invalid filter 'dangling={value}': use dangling=true or dangling=false"
                        ),
                    })
                }
                Some(("name", value)) => out.names.push(value.to_string()),
                Some(("label", value)) => out.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                _ => anyhow::bail!(
                    "invalid filter {filter:?}: use dangling=true|false, name=TEXT or label=KEY[=VALUE]"
                ),
            }
        }
        Ok(out)
    }

    fn keep(&self, volume: &skiff_engine::Volume, used: bool) -> bool {
        let record = &volume.record;
        self.dangling.is_none_or(|d| d != used)
            && (self.names.is_empty() || self.names.iter().any(|n| record.name.contains(n)))
            && self.labels.iter().all(|(k, v)| match v {
                Some(v) => record.labels.get(k) == Some(v),
                None => record.labels.contains_key(k),
            })
    }
}
