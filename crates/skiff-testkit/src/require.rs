//! Finding the programs fixtures run, with an error that names the package to install.

use std::path::{Path, PathBuf};

use crate::{Result, TestkitError};

/// Finds `program` on `PATH` (or as an absolute path), or fails naming the Debian `package`.
pub fn require_program(program: &str, package: &str) -> Result<PathBuf> {
    let missing = || TestkitError::MissingProgram {
        program: program.to_string(),
        package: package.to_string(),
    };
    if program.contains('/') {
        let path = Path::new(program);
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(missing())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // Root's tools live in sbin, which a minimal PATH may leave out.
    for extra in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter()
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(missing)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_installed_program() {
        let sh = require_program("sh", "dash").unwrap();
        assert!(sh.ends_with("sh"));
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let err = require_program("skiff-no-such-program", "skiff-no-such-package").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("skiff-no-such-package"), "{message}");
        assert!(message.contains("make deps"), "{message}");
    }
}
