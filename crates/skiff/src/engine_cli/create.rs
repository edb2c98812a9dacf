//! `skiff create`: make a container from an image (pulling a missing one) without starting it
//! and print its id, as `docker create` does; `skiff start [-a] [-i]` runs it later. Errors
//! exit 125.

use std::process::ExitCode;

use clap::Args;
use skiff_engine::EngineError;

use super::container_options::{ContainerOptions, ensure_image};
use super::exit_code;

/// Options of `skiff create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    options: ContainerOptions,
}

impl CreateArgs {
    /// Creates the container and prints its id.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.create() {
            Ok(id) => {
                println!("{id}");
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("skiff: {err}");
                eprintln!("See 'skiff create --help'.");
                Ok(exit_code(125))
            }
        }
    }

    fn create(&self) -> Result<String, EngineError> {
        let o = &self.options;
        // Docker closes a `create -i` container's stdin when the client of `start -ai` lets go.
        let request = o.request(false)?;
        let engine = o.root.open()?;
        ensure_image(&engine, &o.image)?;
        Ok(engine.create(&request)?.id)
    }
}
