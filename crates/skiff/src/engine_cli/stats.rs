//! `skiff stats [--no-stream] [-a] [CONTAINER...]`: Docker's live table of containers' use
//! (CPU %, memory usage / limit and %, network and block I/O, processes) from their cgroups.
//! CPU % is the CPU time used over a sampling window divided by the window (100% is one
//! whole CPU); `--no-stream` samples once over half a second and prints one table, otherwise
//! the table is redrawn every second until interrupted. `--format` renders each row through a
//! Go template over Docker's fields (`{{json .}}`, `{{.Name}} {{.CPUPerc}}` ...), in a table
//! with a header row when it starts with `table` (see [`super::format`]).

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use skiff_engine::usage::Usage;
use skiff_engine::{Container, Engine};

use super::format::ListFormat;
use super::{EngineRoot, report, table};

/// Docker's `stats` table.
const DEFAULT_FORMAT: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// The column titles of Docker's stats fields.
const HEADERS: &[(&str, &str)] = &[
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// The sampling window of `--no-stream`.
const ONE_SHOT_WINDOW: Duration = Duration::from_millis(500);
/// How often the streaming table is redrawn.
const REFRESH: Duration = Duration::from_secs(1);

/// Options of `skiff stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    root: EngineRoot,
    /// Every container (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Print one table and exit.
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// A Go template per container ({{.Name}} {{.CPUPerc}} ...), `table TEMPLATE` for
    /// aligned columns under a header, `json`, or `table` (the default).
    #[arg(long)]
    format: Option<String>,
    /// The containers (default: every running one).
    containers: Vec<String>,
}

/// One row: the container and two samples of its use.
struct Row {
    /// The container as the user named it (its short id when none was named).
    label: String,
    container: Container,
    before: Usage,
    after: Usage,
    /// The time between the samples.
    elapsed: Duration,
}

impl StatsArgs {
    /// Prints the containers' use.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let engine = self.root.open()?;
        let format = match ListFormat::parse(self.format.as_deref(), DEFAULT_FORMAT) {
            Ok(format) => format,
            Err(err) => {
                eprintln!("{err}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let host_memory = host_memory();
        // Named containers must exist now; `each` picks them again on every refresh.
        for name in &self.containers {
            if let Err(err) = engine.find(name) {
                return Ok(report(&err, 1));
            }
        }
        let window = if self.no_stream {
            ONE_SHOT_WINDOW
        } else {
            REFRESH
        };
        let mut previous: HashMap<String, (Usage, Instant)> = HashMap::new();
        loop {
            let containers = self.pick(&engine)?;
            if previous.is_empty() {
                // The first table needs a window of its own for CPU %.
                for (_, c) in &containers {
                    let usage = engine.usage(c).unwrap_or_default();
                    previous.insert(c.id().to_string(), (usage, Instant::now()));
                }
                std::thread::sleep(window);
            }
            let mut rows = Vec::new();
            let mut next = HashMap::new();
            for (label, c) in containers {
                let c = engine.load(c.id()).unwrap_or(c);
                let now = Instant::now();
                let after = engine.usage(&c).unwrap_or_default();
                let (before, at) = previous
                    .get(c.id())
                    .cloned()
                    .unwrap_or_else(|| (after.clone(), now));
                next.insert(c.id().to_string(), (after.clone(), now));
                rows.push(Row {
                    label,
                    container: c,
                    before,
                    after,
                    elapsed: now.duration_since(at),
                });
            }
            let text = self.render(&rows, host_memory, &format)?;
            let mut out = std::io::stdout().lock();
            if !self.no_stream {
                // Clear the screen and go home, as Docker's live table does.
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write!(out, "{text}")?;
            out.flush()?;
            if self.no_stream {
                return Ok(ExitCode::SUCCESS);
            }
            previous = next;
            std::thread::sleep(REFRESH);
        }
    }

    /// The containers to show now.
    fn pick(&self, engine: &Engine) -> anyhow::Result<Vec<(String, Container)>> {
        if self.containers.is_empty() {
            return Ok(engine
                .list()?
                .into_iter()
                .filter(|c| self.all || c.is_active())
                .map(|c| (self.short(c.id()), c))
                .collect());
        }
        Ok(self
            .containers
            .iter()
            .filter_map(|name| engine.find(name).ok().map(|c| (name.clone(), c)))
            .collect())
    }

    /// The id as the ID column shows it.
    fn short(&self, id: &str) -> String {
        if self.no_trunc {
            id.to_string()
        } else {
            id[..12].to_string()
        }
    }

    fn render(
        &self,
        rows: &[Row],
        host_memory: u64,
        format: &ListFormat,
    ) -> anyhow::Result<String> {
        let docs: Vec<Value> = rows
            .iter()
            .map(|r| document(r, host_memory, &self.short(r.container.id())))
            .collect();
        Ok(format.render(HEADERS, &docs)?)
    }
}

/// Docker's stats fields of one row.
fn document(row: &Row, host_memory: u64, id: &str) -> Value {
    let c = &row.container;
    let u = &row.after;
    let window = row.elapsed.as_nanos().max(1) as f64;
    let cpu = row.after.cpu_ns.saturating_sub(row.before.cpu_ns) as f64 / window * 100.0;
    let running = c.is_active();
    let limit = if running {
        u.memory_limit
            .unwrap_or(host_memory)
            .min(host_memory.max(1))
    } else {
        0
    };
    let mem_percent = if limit > 0 {
        u.memory_bytes as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    json!({
        "BlockIO": format!("{} / {}", io_size(u.block_read), io_size(u.block_write)),
        "CPUPerc": format!("{cpu:.2}%"),
        "Container": row.label,
        "ID": id,
        "MemPerc": format!("{mem_percent:.2}%"),
        "MemUsage": format!("{} / {}", binary_size(u.memory_bytes), binary_size(limit)),
        "Name": c.config.name,
        "NetIO": format!("{} / {}", io_size(u.net_rx), io_size(u.net_tx)),
        "PIDs": u.pids.to_string(),
    })
}

/// Network and block I/O sizes: three significant digits, decimal units.
fn io_size(bytes: u64) -> String {
    table::human_size_precision(bytes, 3)
}

/// The host's memory (`MemTotal`), the limit of a container without one.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Docker's `units.BytesSize`: binary units, four significant digits (`1.5MiB`, `7.654GiB`).
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    table::significant(value, 4, UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sizes_have_four_significant_digits() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(1536 * 1024), "1.5MiB");
        assert_eq!(binary_size(256 << 20), "256MiB");
        assert_eq!(binary_size(8_218_476_544), "7.654GiB");
        assert_eq!(binary_size(126_412), "123.4KiB");
    }
}
