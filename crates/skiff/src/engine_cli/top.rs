//! `skiff top CONTAINER [ps OPTIONS]`: the host's `ps` (default `-ef`: UID PID PPID C STIME
//! TTY TIME CMD), cut down to the processes of the container's cgroup, as `docker top` does.

use std::process::ExitCode;

use clap::Args;

use super::{EngineRoot, report, table};

/// Options of `skiff top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// The container.
    container: String,
    /// Options for ps (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

impl TopArgs {
    /// Prints the container's processes.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let engine = self.root.open()?;
        let pids = match engine
            .find(&self.container)
            .and_then(|c| engine.processes(&c))
        {
            Ok(pids) => pids,
            Err(err) => return Ok(report(&err, 1)),
        };
        let options = if self.ps_options.is_empty() {
            vec!["-ef".to_string()]
        } else {
            self.ps_options.clone()
        };
        let output = match std::process::Command::new("ps").args(&options).output() {
            Ok(output) => output,
            Err(err) => {
                eprintln!("Error: cannot run ps ({err}): install procps");
                return Ok(ExitCode::FAILURE);
            }
        };
        if !output.status.success() {
            eprintln!(
                "Error response from daemon: ps {}: {}",
                options.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return Ok(ExitCode::FAILURE);
        }
        match filter_ps(&String::from_utf8_lossy(&output.stdout), &pids) {
            Ok(rows) => {
                print!("{}", table::render_min(&rows, 20));
                Ok(ExitCode::SUCCESS)
            }
            Err(message) => {
                eprintln!("Error response from daemon: {message}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// The header of `ps` output and its rows for `pids`, each cut into the header's columns (the
/// last column keeps its spaces), as Docker's daemon does.
fn filter_ps(output: &str, pids: &[i32]) -> Result<Vec<Vec<String>>, String> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_index = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or("Couldn't find PID field in ps output: keep the PID column (ps -o pid,...)")?;
    let mut rows = vec![titles.clone()];
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = fields.get(pid_index).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let keep = titles.len().saturating_sub(1).min(fields.len());
        let mut row: Vec<String> = fields[..keep].iter().map(|f| f.to_string()).collect();
        row.push(fields[keep..].join(" "));
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_are_kept_for_the_containers_pids_only() {
        let ps = "UID   PID  PPID  C STIME TTY  TIME     CMD\nroot    1     0  0 10:00 ?    00:00:01 /sbin/init splash\nroot   42     1  0 10:01 ?    00:00:00 sleep 1000\n";
        let rows = filter_ps(ps, &[42]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1][1], "42");
        assert_eq!(rows[1][7], "sleep 1000");
        assert!(filter_ps("USER COMMAND\nroot init\n", &[1]).is_err());
    }
}
