//! `skiff info`: what this host offers Skiff.

use std::process::ExitCode;

use clap::Args;
use skiff_cgroups::{CgroupLayout, Mounts};
use skiff_sys::{NamespaceId, NamespaceKind};

/// Options of `skiff info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl InfoArgs {
    /// Prints the host facts.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let mounts = Mounts::of_this_process()?;
        let layout = match mounts.layout()? {
            CgroupLayout::Legacy => "v1 (legacy)",
            CgroupLayout::Hybrid => "hybrid (v1 controllers + cgroup2)",
            CgroupLayout::Unified => "v2 (unified)",
        };
        let namespaces: Vec<&str> = NamespaceKind::ALL
            .into_iter()
            .filter(|kind| NamespaceId::of(None, *kind).is_ok())
            .map(NamespaceKind::oci_name)
            .collect();
        if self.json {
            let v1: serde_json::Map<String, serde_json::Value> = mounts
                .v1
                .iter()
                .map(|(c, p)| (c.clone(), p.display().to_string().into()))
                .collect();
            let doc = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "kernel": kernel,
                "cgroups": {"layout": layout, "v1": v1, "v2": mounts.v2.as_ref().map(|p| p.display().to_string())},
                "namespaces": namespaces,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            println!("skiff:      {}", env!("CARGO_PKG_VERSION"));
            println!("kernel:     {kernel}");
            println!("cgroups:    {layout}");
            for (controller, path) in &mounts.v1 {
                println!("  v1 {controller:<12} {}", path.display());
            }
            if let Some(v2) = &mounts.v2 {
                println!("  cgroup2         {}", v2.display());
            }
            println!("namespaces: {}", namespaces.join(" "));
        }
        Ok(ExitCode::SUCCESS)
    }
}
