//! The image commands, docker-like: `pull`, `login`, `logout`, `images`, `rmi`, `load`, `save` and
//! `image inspect|import|export|prune|ls|rm`, over the image store of `--data-root`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use skiff_image::archive::{ExportFormat, ImportOptions};
use skiff_image::{ImageRecord, ImageStore, Platform, PullOptions, Reference};

mod login;
mod progress;
mod table;

pub use self::login::{LoginArgs, LogoutArgs};

use self::progress::Progress;
use self::table as image_table;

/// The data root every Skiff state lives under.
const DEFAULT_DATA_ROOT: &str = "/var/lib/skiff";

/// Where the image store lives.
#[derive(Debug, Args)]
pub struct DataRoot {
    /// Root of Skiff's persistent state (images under DATA_ROOT/images).
    #[arg(long, env = "SKIFF_DATA_ROOT", default_value = DEFAULT_DATA_ROOT)]
    data_root: PathBuf,
}

impl DataRoot {
    fn open(&self) -> anyhow::Result<ImageStore> {
        ImageStore::open(&self.data_root)
            .with_context(|| format!("open the image store in {}", self.data_root.display()))
    }
}

/// Options of `skiff pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    root: DataRoot,
    /// A registry (HOST:PORT) that may be reached over plain HTTP; repeatable. Loopback
    /// registries always may.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// The platform to pull from a multi-platform image, OS/ARCH[/VARIANT].
    #[arg(long)]
    platform: Option<String>,
    /// Print only the image name.
    #[arg(short, long)]
    quiet: bool,
    /// The image: NAME[:TAG|@DIGEST].
    image: String,
}

/// Options of `skiff images` / `skiff image ls`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print only image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show whole ids.
    #[arg(long)]
    no_trunc: bool,
    /// Show the manifest digests.
    #[arg(long)]
    digests: bool,
}

/// Options of `skiff rmi` / `skiff image rm`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Accepted for Docker compatibility (an image with several names is removed whole).
    #[arg(short, long)]
    force: bool,
    /// Images to remove, by name or id.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// Options of `skiff load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    root: DataRoot,
    /// Read the archive from this file instead of standard input.
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short, long)]
    quiet: bool,
}

/// Options of `skiff save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    #[command(flatten)]
    root: DataRoot,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Images to save, by name or id.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `skiff images` with its data root.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    root: DataRoot,
    #[command(flatten)]
    list: ListArgs,
}

/// `skiff rmi` with its data root.
#[derive(Debug, Args)]
pub struct RmiArgs {
    #[command(flatten)]
    root: DataRoot,
    #[command(flatten)]
    remove: RemoveArgs,
}

/// `skiff image ...`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Root of Skiff's persistent state (images under DATA_ROOT/images).
    #[arg(long, global = true, env = "SKIFF_DATA_ROOT", default_value = DEFAULT_DATA_ROOT)]
    data_root: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

/// The `skiff image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Show images as JSON.
    Inspect {
        /// Images, by name or id.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Import an OCI layout (directory or tar) or a docker archive.
    Import {
        /// The layout directory or archive file.
        path: PathBuf,
        /// Record the image under this name (needed when the source names it only by tag).
        #[arg(long)]
        name: Option<String>,
    },
    /// Export images as an OCI layout or a docker archive.
    Export {
        /// Images, by name or id.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// The file (or directory, for `oci-dir`) to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The archive format.
        #[arg(long, value_enum, default_value_t = Format::Oci)]
        format: Format,
    },
    /// Remove blobs and snapshots no image refers to.
    Prune {
        /// Accepted for Docker compatibility: nothing named is ever removed, so no prompt.
        #[arg(short, long)]
        force: bool,
        /// Accepted for Docker compatibility.
        #[arg(short, long)]
        all: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(RemoveArgs),
}

/// Archive formats of `skiff image export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// OCI image layout in a tar file.
    Oci,
    /// OCI image layout directory.
    OciDir,
    /// Docker archive (`docker save` format).
    Docker,
}

impl PullArgs {
    /// Pulls the image, with a progress bar per layer on a terminal.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let store = self.root.open()?;
        let reference = Reference::parse(&self.image)?;
        let mut options = PullOptions::default();
        options.registry.insecure_registries = insecure_registries(self.insecure_registries);
        if let Some(platform) = &self.platform {
            options.platform = parse_platform(platform)?;
        }
        let previous = store.records().get(&reference.to_string())?;
        if !self.quiet {
            let tag = reference
                .tag
                .clone()
                .or(reference.digest.clone())
                .unwrap_or_default();
            println!("{tag}: Pulling from {}", reference.familiar_repository());
        }
        let progress = Progress::new(self.quiet);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("start the async runtime")?;
        let events = progress.events();
        let result = runtime.block_on(store.pull(&reference, &options, &events));
        progress.finish();
        let record = result.with_context(|| format!("pull {}", self.image))?;
        if self.quiet {
            println!("{reference}");
            return Ok(ExitCode::SUCCESS);
        }
        println!("Digest: {}", record.target.digest);
        let status = match previous {
            Some(old) if old.target.digest == record.target.digest => "Image is up to date for",
            _ => "Downloaded newer image for",
        };
        println!("Status: {status} {}", reference.familiar());
        println!("{reference}");
        Ok(ExitCode::SUCCESS)
    }
}

fn insecure_registries(mut flags: Vec<String>) -> Vec<String> {
    if let Ok(env) = std::env::var("SKIFF_INSECURE_REGISTRIES") {
        flags.extend(
            env.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    flags
}

fn parse_platform(text: &str) -> anyhow::Result<Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        }),
        _ => bail!("invalid platform {text:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64"),
    }
}

impl ImagesArgs {
    /// `skiff images`.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        list(&self.root.open()?, &self.list)
    }
}

impl RmiArgs {
    /// `skiff rmi`.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        remove(&self.root.open()?, &self.remove)
    }
}

fn list(store: &ImageStore, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let records = store.list()?;
    if args.quiet {
        let mut ids: Vec<String> = records
            .iter()
            .map(|r| image_table::id(&r.config, args.no_trunc))
            .collect();
        ids.dedup();
        for id in ids {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        image_table::render(store, &records, args.no_trunc, args.digests)
    );
    Ok(ExitCode::SUCCESS)
}

fn remove(store: &ImageStore, args: &RemoveArgs) -> anyhow::Result<ExitCode> {
    let _ = args.force;
    let mut removed_ids = Vec::new();
    for image in &args.images {
        let record = store.find(image).with_context(|| format!("rmi {image}"))?;
        let by_name = Reference::parse(image).is_ok_and(|r| r.to_string() == record.name);
        let names = if by_name {
            vec![record.name.clone()]
        } else {
            store.names_of(&record.config)?
        };
        for name in names {
            store.untag(&name)?;
            println!("Untagged: {}", familiar(&name));
        }
        if store.names_of(&record.config)?.is_empty() {
            removed_ids.push(record.config.clone());
        }
    }
    let report = store.prune(&[])?;
    for id in removed_ids {
        if report.blobs.contains(&id) {
            println!("Deleted: {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn familiar(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

fn print_loaded(records: &[ImageRecord]) {
    for record in records {
        println!("Loaded image: {}", familiar(&record.name));
    }
}

impl LoadArgs {
    /// `skiff load`: a docker archive (or OCI layout tar) from a file or standard input.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let store = self.root.open()?;
        let options = ImportOptions::default();
        let records = match &self.input {
            Some(path) => store
                .import_path(path, &options)
                .with_context(|| format!("load {}", path.display()))?,
            None => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    bail!(
                        "requested load from stdin, but stdin is empty: use -i FILE or redirect an archive"
                    );
                }
                store
                    .import_tar(stdin, &options)
                    .context("load from stdin")?
            }
        };
        if !self.quiet {
            print_loaded(&records);
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl SaveArgs {
    /// `skiff save`: a docker archive to a file or standard output.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let store = self.root.open()?;
        let what = self.images.join(" ");
        match &self.output {
            Some(path) => store
                .export(&self.images, ExportFormat::DockerArchive, path)
                .with_context(|| format!("save {what}"))?,
            None => {
                let stdout = std::io::stdout();
                if stdout.is_terminal() {
                    bail!("refusing to write an archive to a terminal: use -o FILE or redirect");
                }
                let mut out = stdout.lock();
                store
                    .export_to(&self.images, ExportFormat::DockerArchive, &mut out)
                    .with_context(|| format!("save {what}"))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl ImageArgs {
    /// Runs `skiff image SUBCOMMAND`.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let store = ImageStore::open(&self.data_root)
            .with_context(|| format!("open the image store in {}", self.data_root.display()))?;
        match self.command {
            ImageCommand::Inspect { images } => inspect(&store, &images),
            ImageCommand::Import { path, name } => import(&store, &path, name.as_deref()),
            ImageCommand::Export {
                images,
                output,
                format,
            } => {
                let format = match format {
                    Format::Oci => ExportFormat::OciArchive,
                    Format::OciDir => ExportFormat::OciDir,
                    Format::Docker => ExportFormat::DockerArchive,
                };
                store
                    .export(&images, format, &output)
                    .with_context(|| format!("export {}", images.join(" ")))?;
                Ok(ExitCode::SUCCESS)
            }
            ImageCommand::Prune { force: _, all: _ } => {
                let report = store.prune(&[])?;
                println!("Deleted blobs: {}", report.blobs.len());
                println!("Deleted snapshots: {}", report.snapshots.len());
                println!(
                    "Total reclaimed space: {}",
                    image_table::human_size(report.bytes)
                );
                Ok(ExitCode::SUCCESS)
            }
            ImageCommand::Ls(args) => list(&store, &args),
            ImageCommand::Rm(args) => remove(&store, &args),
        }
    }
}

fn import(store: &ImageStore, path: &Path, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        name: name.map(Reference::parse).transpose()?,
        ..ImportOptions::default()
    };
    let records = store
        .import_path(path, &options)
        .with_context(|| format!("import {}", path.display()))?;
    print_loaded(&records);
    Ok(ExitCode::SUCCESS)
}

fn inspect(store: &ImageStore, images: &[String]) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    let mut missing = None;
    for name in images {
        match store.resolve(name) {
            Ok(image) => out.push(image_table::inspect_json(store, &image)?),
            Err(e) => missing = Some(anyhow::Error::new(e).context(format!("inspect {name}"))),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    match missing {
        Some(error) => Err(error),
        None => Ok(ExitCode::SUCCESS),
    }
}
