//! `skiff login [SERVER]` and `skiff logout [SERVER]`, as Docker's: the credentials are
//! checked against the registry (its `/v2/` challenge answered as a pull does) before they are
//! stored, base64 `user:password` under `auths.<server>.auth` of the docker-style config
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, mode 0600, other keys kept). The
//! server defaults to Docker Hub, stored as `https://index.docker.io/v1/`.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
use skiff_image::registry::{RegistryClient, auth};
use skiff_image::{Credentials, RegistryOptions};

/// Options of `skiff login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The user name.
    #[arg(short, long)]
    username: Option<String>,
    /// The password (prefer --password-stdin: a command line is visible to others).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// The registry: HOST[:PORT] (default: Docker Hub).
    server: Option<String>,
}

/// Options of `skiff logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: HOST[:PORT] (default: Docker Hub).
    server: Option<String>,
}

/// The registry a server argument names, as an image reference would (`docker.io`,
/// `host:port`): no scheme, no path.
fn registry_of(server: Option<&str>) -> String {
    let Some(server) = server else {
        return skiff_image::reference::DEFAULT_REGISTRY.to_string();
    };
    let bare = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = bare.split('/').next().unwrap_or(bare).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            skiff_image::reference::DEFAULT_REGISTRY.to_string()
        }
        _ => host,
    }
}

fn config_path() -> anyhow::Result<PathBuf> {
    auth::docker_config_path().context("neither DOCKER_CONFIG nor HOME is set")
}

impl LoginArgs {
    /// Checks the credentials and stores them.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.login() {
            Ok(()) => {
                println!("Login Succeeded");
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("{err:#}");
                Ok(ExitCode::FAILURE)
            }
        }
    }

    fn login(&self) -> anyhow::Result<()> {
        let registry = registry_of(self.server.as_deref());
        let credentials = self.credentials(&registry)?;
        let options = RegistryOptions {
            insecure_registries: super::insecure_registries(Vec::new()),
            credentials: Some(credentials.clone()),
            docker_config: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?;
        runtime
            .block_on(RegistryClient::login(&registry, &options))
            .map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?;
        let path = config_path()?;
        auth::store_credentials(&path, &registry, &credentials)
            .with_context(|| format!("Error saving credentials: store in {}", path.display()))?;
        Ok(())
    }

    /// The user name and password from the flags, stdin or (on a terminal) prompts.
    fn credentials(&self, registry: &str) -> anyhow::Result<Credentials> {
        if self.password.is_some() {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        }
        let password = if self.password_stdin {
            if self.username.is_none() {
                anyhow::bail!("Must provide --username with --password-stdin");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read the password from stdin")?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        } else {
            self.password.clone()
        };
        let interactive = self.username.is_none() || password.is_none();
        if interactive && !std::io::stdin().is_terminal() {
            anyhow::bail!("Error: Cannot perform an interactive login from a non TTY device");
        }
        let username = match &self.username {
            Some(user) => user.clone(),
            None => prompt(&format!("Username ({registry}): "))?,
        };
        let password = match password {
            Some(password) => password,
            None => prompt_hidden("Password: ")?,
        };
        if username.is_empty() {
            anyhow::bail!("Error: Non-null Username Required");
        }
        if password.is_empty() {
            anyhow::bail!("Error: Password Required");
        }
        Ok(Credentials { username, password })
    }
}

/// Asks `question` on the terminal and reads one line.
fn prompt(question: &str) -> anyhow::Result<String> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// [`prompt`] with the terminal's echo off.
fn prompt_hidden(question: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let saved = tcgetattr(stdin.as_fd()).ok();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet);
    }
    let answer = prompt(question);
    if let Some(saved) = &saved {
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, saved);
    }
    println!();
    answer
}

impl LogoutArgs {
    /// Forgets the server's credentials.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let registry = registry_of(self.server.as_deref());
        let shown = match &self.server {
            None => auth::DOCKER_HUB_KEY.to_string(),
            Some(_) => auth::config_key(&registry),
        };
        println!("Removing login credentials for {shown}");
        let path = config_path()?;
        if let Err(err) = auth::remove_credentials(&path, &registry) {
            eprintln!("WARNING: could not erase credentials:");
            eprintln!("{shown}: {err}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_name_registries_as_references_do() {
        assert_eq!(registry_of(None), "docker.io");
        assert_eq!(
            registry_of(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(registry_of(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(
            registry_of(Some("http://Reg.example:5000/v2/")),
            "reg.example:5000"
        );
    }
}
