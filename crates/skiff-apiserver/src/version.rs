//! The `/version` document.

/// The Kubernetes minor version whose API Skiff serves (kubectl 1.27 to 1.33 stay within the
/// version skew kubectl supports against it).
pub const KUBERNETES_MINOR: u32 = 33;

/// What `GET /version` answers, field for field as apimachinery's `version.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// `"1"`.
    pub major: String,
    /// `"33"`.
    pub minor: String,
    /// `v1.33.0-skiff.0.1.0`: the Kubernetes version, then Skiff's own.
    pub git_version: String,
    /// `linux/amd64`.
    pub platform: String,
}

impl VersionInfo {
    /// The version info of this build; `skiff_version` is the binary's own version.
    pub fn current(skiff_version: &str) -> VersionInfo {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        VersionInfo {
            major: "1".to_string(),
            minor: KUBERNETES_MINOR.to_string(),
            git_version: format!("v1.{KUBERNETES_MINOR}.0-skiff.{skiff_version}"),
            platform: format!("{}/{arch}", std::env::consts::OS),
        }
    }

    /// The JSON body (camelCase keys, as kubectl expects).
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"major":"{}","minor":"{}","gitVersion":"{}","gitCommit":"","gitTreeState":"clean","buildDate":"","goVersion":"","compiler":"rustc","platform":"{}"}}"#,
            self.major, self.minor, self.git_version, self.platform
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_a_semver_kubectl_can_compare() {
        let info = VersionInfo::current("0.1.0");
        assert_eq!(info.major, "1");
        assert_eq!(info.git_version, "v1.33.0-skiff.0.1.0");
        assert!(info.platform.starts_with("linux/"));
        assert!(
            info.to_json()
                .contains(r#""gitVersion":"v1.33.0-skiff.0.1.0""#)
        );
    }
}
