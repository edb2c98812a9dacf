//! `skiff commit`: a container's changes as a new image, printing its id as Docker does.

use std::process::ExitCode;

use clap::{ArgAction, Args};
use skiff_engine::CommitOptions;

use super::{EngineRoot, report};

/// Options of `skiff commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Author (e.g. "Jane Doe <jane@example.com>").
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction to the image: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// STOPSIGNAL, USER, VOLUME, WORKDIR (repeatable).
    #[arg(short, long = "change", value_name = "CHANGE")]
    changes: Vec<String>,
    /// Pause the container while it is committed.
    #[arg(
        short,
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true"
    )]
    pause: bool,
    /// The container, by name or id.
    container: String,
    /// The new image's name.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    repository: Option<String>,
}

impl CommitArgs {
    /// Commits the container and prints the new image's id.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let engine = self.root.open()?;
        let options = CommitOptions {
            reference: self.repository,
            message: self.message,
            author: self.author,
            changes: self.changes,
            pause: self.pause,
        };
        let outcome = match engine
            .find(&self.container)
            .and_then(|c| engine.commit(&c, &options))
        {
            Ok(outcome) => outcome,
            Err(err) => return Ok(report(&err, 1)),
        };
        if let Some(why) = &outcome.pause_failed {
            eprintln!(
                "WARNING: could not pause container {} ({why}): committed it while it ran",
                self.container
            );
        }
        println!("{}", outcome.committed.record.config);
        Ok(ExitCode::SUCCESS)
    }
}
