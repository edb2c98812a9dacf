//! Repository policy: the dependency rules of `docs/architecture.md`, read from every
//! `Cargo.toml` of the workspace, and the lint rules every crate must inherit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skiff_system_tests::workspace_root;

/// One crate of the workspace: its name, manifest path and the workspace crates it depends on
/// (normal, build and dev dependencies alike).
#[derive(Debug)]
struct Crate {
    name: String,
    manifest: PathBuf,
    deps: Vec<(String, &'static str)>,
    lints_workspace: bool,
}

fn read_manifest(path: &Path) -> toml::Table {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn workspace_crates() -> Vec<Crate> {
    let root = workspace_root();
    let top = read_manifest(&root.join("Cargo.toml"));
    let members = top["workspace"]["members"]
        .as_array()
        .expect("workspace.members is a list");
    members
        .iter()
        .map(|member| {
            let dir = root.join(member.as_str().expect("member is a path"));
            let manifest = dir.join("Cargo.toml");
            let table = read_manifest(&manifest);
            let name = table["package"]["name"]
                .as_str()
                .expect("package.name")
                .to_string();
            let mut deps = Vec::new();
            for (section, kind) in [
                ("dependencies", "normal"),
                ("build-dependencies", "build"),
                ("dev-dependencies", "dev"),
            ] {
                if let Some(deps_table) = table.get(section).and_then(|t| t.as_table()) {
                    for dep in deps_table.keys().filter(|d| d.starts_with("skiff")) {
                        deps.push((dep.clone(), kind));
                    }
                }
            }
            let lints_workspace = table
                .get("lints")
                .and_then(|l| l.get("workspace"))
                .and_then(|w| w.as_bool())
                .unwrap_or(false);
            Crate {
                name,
                manifest,
                deps,
                lints_workspace,
            }
        })
        .collect()
}

const CONTROL_PLANE: &[&str] = &[
    "skiff-store",
    "skiff-apiserver",
    "skiff-scheduler",
    "skiff-controllers",
];
const NODE_ONLY: &[&str] = &[
    "skiff-sys",
    "skiff-cgroups",
    "skiff-runtime",
    "skiff-engine",
    "skiff-net",
    "skiff-procfs",
];
const NODE_CRATES: &[&str] = &[
    "skiff-sys",
    "skiff-cgroups",
    "skiff-runtime",
    "skiff-image",
    "skiff-net",
    "skiff-procfs",
    "skiff-engine",
    "skiff-agent",
];
const SERVER_ONLY: &[&str] = &["skiff-store", "skiff-apiserver"];

/// The layer of each crate (architecture.md): a crate may depend only on lower layers.
fn layer_of(name: &str) -> Option<u8> {
    Some(match name {
        "skiff-apimachinery" => 0,
        "skiff-sys" | "skiff-cgroups" => 1,
        "skiff-runtime" | "skiff-image" | "skiff-net" | "skiff-store" | "skiff-procfs" => 2,
        "skiff-engine" | "skiff-apiserver" => 3,
        "skiff-scheduler" | "skiff-controllers" | "skiff-agent" => 4,
        "skiff" => 5,
        _ => return None,
    })
}

/// Every rule broken by one dependency edge, as readable sentences.
fn violations(from: &str, to: &str, kind: &str) -> Vec<String> {
    let mut found = Vec::new();
    let edge = format!("{from} -> {to} ({kind} dependency)");
    if to == "skiff" {
        found.push(format!("{edge}: nothing may depend on the binary crate"));
    }
    if to == "skiff-testkit" && kind != "dev" {
        found.push(format!("{edge}: the test kit is a dev-dependency only"));
    }
    if CONTROL_PLANE.contains(&from) && NODE_ONLY.contains(&to) {
        found.push(format!(
            "{edge}: the control plane must not depend on node crates"
        ));
    }
    if NODE_CRATES.contains(&from) && SERVER_ONLY.contains(&to) {
        found.push(format!(
            "{edge}: node crates must not depend on the store or the API server"
        ));
    }
    if kind != "dev" {
        if let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) {
            if b >= a {
                found.push(format!(
                    "{edge}: layer {a} may only depend on lower layers, {to} is layer {b}"
                ));
            }
        }
    }
    found
}

#[test]
fn no_crate_depends_on_one_the_architecture_forbids() {
    let crates = workspace_crates();
    assert!(
        crates.len() >= 14,
        "expected every crate of the architecture, found {}",
        crates.len()
    );
    let mut broken = Vec::new();
    for krate in &crates {
        for (dep, kind) in &krate.deps {
            for v in violations(&krate.name, dep, kind) {
                broken.push(format!("{v} [{}]", krate.manifest.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "forbidden dependency edges:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_crate_of_the_architecture_exists_with_a_readme() {
    let crates = workspace_crates();
    let names: BTreeMap<&str, &Crate> = crates.iter().map(|c| (c.name.as_str(), c)).collect();
    for expected in [
        "skiff-apimachinery",
        "skiff-sys",
        "skiff-cgroups",
        "skiff-runtime",
        "skiff-image",
        "skiff-net",
        "skiff-store",
        "skiff-procfs",
        "skiff-engine",
        "skiff-apiserver",
        "skiff-scheduler",
        "skiff-controllers",
        "skiff-agent",
        "skiff",
        "skiff-testkit",
    ] {
        let krate = names
            .get(expected)
            .unwrap_or_else(|| panic!("crate {expected} is missing from the workspace"));
        let readme = krate.manifest.with_file_name("README.md");
        assert!(
            readme.exists(),
            "{expected} has no README.md at {}",
            readme.display()
        );
    }
}

#[test]
fn only_skiff_sys_opts_out_of_the_workspace_lints() {
    for krate in workspace_crates() {
        if krate.name == "skiff-sys" {
            let table = read_manifest(&krate.manifest);
            let clippy = &table["lints"]["clippy"];
            assert!(
                clippy.get("undocumented_unsafe_blocks").is_some(),
                "skiff-sys must deny undocumented unsafe"
            );
            assert!(
                clippy.get("unwrap_used").is_some(),
                "skiff-sys must deny unwrap"
            );
        } else {
            assert!(
                krate.lints_workspace,
                "{} must set `[lints] workspace = true`",
                krate.name
            );
        }
    }
    let top = read_manifest(&workspace_root().join("Cargo.toml"));
    assert_eq!(
        top["workspace"]["lints"]["rust"]["unsafe_code"].as_str(),
        Some("forbid")
    );
}

#[test]
fn the_checker_names_each_kind_of_forbidden_edge() {
    assert!(violations("skiff-apiserver", "skiff-engine", "normal")[0].contains("control plane"));
    assert!(
        violations("skiff-agent", "skiff-store", "normal")
            .iter()
            .any(|v| v.contains("node crates"))
    );
    assert!(
        violations("skiff-image", "skiff", "normal")
            .iter()
            .any(|v| v.contains("binary crate"))
    );
    assert!(
        violations("skiff-sys", "skiff-runtime", "normal")
            .iter()
            .any(|v| v.contains("lower layers"))
    );
    assert!(
        violations("skiff-engine", "skiff-testkit", "normal")
            .iter()
            .any(|v| v.contains("dev-dependency"))
    );
    assert!(violations("skiff-engine", "skiff-runtime", "normal").is_empty());
    assert!(violations("skiff-engine", "skiff-testkit", "dev").is_empty());
}
