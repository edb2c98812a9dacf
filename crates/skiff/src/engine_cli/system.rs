//! `skiff system prune|df`: what the engine's data root holds and what can go. `prune`
//! removes stopped containers, then (with `--volumes`) the anonymous volumes no container
//! uses, then dangling images (every image no container uses, with `-a`) and the content only
//! they held; it prints what it removed and the total reclaimed, as Docker does. `df` prints
//! Docker's summary table of images, containers and volumes.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use skiff_engine::{Engine, Status};
use skiff_image::{Digest, ImageStore};

use super::table::human_size;
use super::{EngineRoot, confirm, table};

/// `skiff system`.
#[derive(Debug, Args)]
pub struct SystemArgs {
    #[command(flatten)]
    root: EngineRoot,
    #[command(subcommand)]
    command: SystemCommand,
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Remove stopped containers, dangling images and (with --volumes) unused anonymous volumes.
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Every image no container uses, not only dangling ones.
        #[arg(short, long)]
        all: bool,
        /// Anonymous volumes no container uses too.
        #[arg(long)]
        volumes: bool,
    },
    /// Show disk usage of images, containers and volumes.
    Df,
}

impl SystemArgs {
    /// Runs the system command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let engine = self.root.open()?;
        match self.command {
            SystemCommand::Prune {
                force,
                all,
                volumes,
            } => prune(&engine, force, all, volumes),
            SystemCommand::Df => df(&engine),
        }
    }
}

fn prune(engine: &Engine, force: bool, all: bool, volumes: bool) -> anyhow::Result<ExitCode> {
    let mut warning = String::from("WARNING! This will remove:\n  - all stopped containers\n");
    if volumes {
        warning.push_str("  - all anonymous volumes not used by at least one container\n");
    }
    warning.push_str(if all {
        "  - all images without at least one container associated to them\n"
    } else {
        "  - all dangling images\n"
    });
    if !force && !confirm(&warning)? {
        return Ok(ExitCode::SUCCESS);
    }
    let mut reclaimed = 0u64;
    let mut removed = Vec::new();
    let mut failed = false;
    for container in engine.list()? {
        // A container whose monitor lives is starting or running, whatever its record says.
        if container.is_active()
            || container.state.shim_alive()
            || container.status() == Status::Removing
        {
            continue;
        }
        let size = skiff_engine::tree::size(&engine.dir(container.id()).upper());
        match engine.remove(&container, false) {
            Ok(()) => {
                reclaimed += size;
                removed.push(container.id().to_string());
            }
            Err(err) => {
                eprintln!("Error response from daemon: {err}");
                failed = true;
            }
        }
    }
    section("Deleted Containers:", &removed);
    if volumes {
        let pruned = engine.prune_volumes(false)?;
        reclaimed += pruned.bytes;
        section("Deleted Volumes:", &pruned.removed);
    }
    let store = engine.images()?;
    let remaining = engine.list()?;
    let used: BTreeSet<String> = remaining
        .iter()
        .map(|c| c.config.image_id.clone())
        .collect();
    let keep: Vec<Digest> = remaining
        .iter()
        .flat_map(|c| c.config.chain.iter())
        .filter_map(|c| Digest::parse(c).ok())
        .collect();
    let mut lines = Vec::new();
    let mut untagged_ids = BTreeSet::new();
    for record in store.list()? {
        let dangling = record.name.starts_with("sha256:");
        if used.contains(&record.config.to_string()) || !(all || dangling) {
            continue;
        }
        store.untag(&record.name)?;
        if !dangling {
            lines.push(format!("untagged: {}", familiar(&record.name)));
        }
        untagged_ids.insert(record.config.clone());
    }
    let report = store.prune(&keep)?;
    reclaimed += report.bytes;
    for id in untagged_ids {
        if report.blobs.contains(&id) {
            lines.push(format!("deleted: {id}"));
        }
    }
    section("Deleted Images:", &lines);
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a titled list and an empty line, if the list has anything.
fn section(title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    println!("{title}");
    for item in items {
        println!("{item}");
    }
    println!();
}

fn familiar(name: &str) -> String {
    skiff_image::Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

fn df(engine: &Engine) -> anyhow::Result<ExitCode> {
    let containers = engine.list()?;
    let store: ImageStore = engine.images()?;
    // Images: each snapshot counted once; reclaimable what no container's image needs.
    let used_images: BTreeSet<String> = containers
        .iter()
        .map(|c| c.config.image_id.clone())
        .collect();
    let mut image_ids = BTreeSet::new();
    let mut snapshots = BTreeSet::new();
    let mut active_snapshots = BTreeSet::new();
    for record in store.list()? {
        let Ok(image) = store.resolve_record(&record) else {
            continue;
        };
        image_ids.insert(record.config.to_string());
        let active = used_images.contains(&record.config.to_string());
        for chain_id in image.chain {
            if active {
                active_snapshots.insert(chain_id.clone());
            }
            snapshots.insert(chain_id);
        }
    }
    let snapshot_size = |c: &Digest| store.snapshots().info(c).map(|i| i.size).unwrap_or(0);
    let images_size: u64 = snapshots.iter().map(snapshot_size).sum();
    let images_active: u64 = active_snapshots.iter().map(snapshot_size).sum();
    let active_images = image_ids
        .iter()
        .filter(|id| used_images.contains(*id))
        .count();

    let mut containers_size = 0;
    let mut containers_reclaimable = 0;
    for c in &containers {
        let size = skiff_engine::tree::size(&engine.dir(c.id()).upper());
        containers_size += size;
        if !c.is_active() {
            containers_reclaimable += size;
        }
    }
    let active_containers = containers.iter().filter(|c| c.is_active()).count();

    let used_volumes: BTreeSet<String> = containers
        .iter()
        .flat_map(|c| c.config.volumes.iter().map(|v| v.name.clone()))
        .collect();
    let volumes = engine.volumes()?.list()?;
    let mut volumes_size = 0;
    let mut volumes_reclaimable = 0;
    for v in &volumes {
        let size = skiff_engine::tree::size(&v.mountpoint);
        volumes_size += size;
        if !used_volumes.contains(&v.record.name) {
            volumes_reclaimable += size;
        }
    }
    let active_volumes = volumes
        .iter()
        .filter(|v| used_volumes.contains(&v.record.name))
        .count();

    let rows = vec![
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        row(
            "Images",
            image_ids.len(),
            active_images,
            images_size,
            images_size.saturating_sub(images_active),
        ),
        row(
            "Containers",
            containers.len(),
            active_containers,
            containers_size,
            containers_reclaimable,
        ),
        row(
            "Local Volumes",
            volumes.len(),
            active_volumes,
            volumes_size,
            volumes_reclaimable,
        ),
        vec![
            "Build Cache".into(),
            "0".into(),
            "0".into(),
            "0B".into(),
            "0B".into(),
        ],
    ];
    print!("{}", table::render(&rows));
    Ok(ExitCode::SUCCESS)
}

/// One `df` row: the reclaimable size with its share of the size (when there is a size).
fn row(kind: &str, total: usize, active: usize, size: u64, reclaimable: u64) -> Vec<String> {
    let reclaimable = match (reclaimable * 100).checked_div(size) {
        Some(percent) => format!("{} ({percent}%)", human_size(reclaimable)),
        None => human_size(reclaimable),
    };
    vec![
        kind.to_string(),
        total.to_string(),
        active.to_string(),
        human_size(size),
        reclaimable,
    ]
}
