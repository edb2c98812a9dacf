//! `commit --change`: the Dockerfile instructions Docker accepts there (`CMD`, `ENTRYPOINT`,
//! `ENV`, `EXPOSE`, `LABEL`, `USER`, `VOLUME`, `WORKDIR`, `STOPSIGNAL`) applied to an image's
//! container config. Pure data; no I/O.

use std::collections::BTreeMap;

use crate::error::{ImageError, Result};
use crate::oci::ContainerConfig;

/// Applies one instruction (`CMD ["sh"]`, `ENV A=1 B=2`, `WORKDIR /srv`, ...) to `config`.
///
/// ```
/// use skiff_image::{ContainerConfig, commit::apply_change};
/// let mut config = ContainerConfig::default();
/// apply_change(&mut config, r#"CMD ["sh", "-c", "echo hi"]"#).unwrap();
/// apply_change(&mut config, "ENV GREETING=hello NAME=\"a b\"").unwrap();
/// apply_change(&mut config, "ENTRYPOINT echo").unwrap();
/// assert_eq!(config.cmd.unwrap(), ["sh", "-c", "echo hi"]);
/// assert_eq!(config.env.unwrap(), ["GREETING=hello", "NAME=a b"]);
/// assert_eq!(config.entrypoint.unwrap(), ["/bin/sh", "-c", "echo"]);
/// ```
pub fn apply_change(config: &mut ContainerConfig, change: &str) -> Result<()> {
    let change = change.trim();
    let (word, rest) = change
        .split_once(char::is_whitespace)
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change, ""));
    let bad = |detail: &str| ImageError::Invalid {
        what: format!("change {change:?}"),
        detail: detail.to_string(),
    };
    if rest.is_empty() {
        return Err(bad("the instruction needs an argument"));
    }
    match word.to_ascii_uppercase().as_str() {
        "CMD" => config.cmd = Some(command(rest)),
        "ENTRYPOINT" => config.entrypoint = Some(command(rest)),
        "ENV" => {
            let mut env = config.env.take().unwrap_or_default();
            for (key, value) in pairs(rest).map_err(|d| bad(&d))? {
                let prefix = format!("{key}=");
                env.retain(|e| !e.starts_with(&prefix) && e != &key);
                env.push(format!("{key}={value}"));
            }
            config.env = Some(env);
        }
        "LABEL" => {
            let mut labels = config.labels.take().unwrap_or_default();
            for (key, value) in pairs(rest).map_err(|d| bad(&d))? {
                labels.insert(key, value);
            }
            config.labels = Some(labels);
        }
        "EXPOSE" => {
            let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for port in words(rest).map_err(|d| bad(&d))? {
                let port = if port.contains('/') {
                    port
                } else {
                    format!("{port}/tcp")
                };
                ports.insert(port, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let list = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(list) => list,
                Err(_) => words(rest).map_err(|d| bad(&d))?,
            };
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            for volume in list {
                volumes.insert(volume, serde_json::json!({}));
            }
        }
        "USER" => config.user = Some(single(rest).map_err(|d| bad(&d))?),
        "WORKDIR" => {
            let dir = single(rest).map_err(|d| bad(&d))?;
            config.working_dir = Some(if dir.starts_with('/') {
                dir
            } else {
                let base = config.working_dir.as_deref().unwrap_or("/");
                format!("{}/{dir}", base.trim_end_matches('/'))
            });
        }
        "STOPSIGNAL" => config.stop_signal = Some(single(rest).map_err(|d| bad(&d))?),
        other => {
            return Err(bad(&format!(
                "{other} is not supported: use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR"
            )));
        }
    }
    Ok(())
}

/// The exec form (a JSON array of strings) or the shell form (`/bin/sh -c TEXT`).
fn command(text: &str) -> Vec<String> {
    if text.starts_with('[') {
        if let Ok(argv) = serde_json::from_str::<Vec<String>>(text) {
            return argv;
        }
    }
    vec!["/bin/sh".to_string(), "-c".to_string(), text.to_string()]
}

/// Exactly one word.
fn single(text: &str) -> std::result::Result<String, String> {
    match words(text)?.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err("the instruction takes exactly one argument".to_string()),
    }
}

/// `K=V K2="v 2"`, or the old form `K the value`.
fn pairs(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let list = words(text)?;
    if !list.first().is_some_and(|w| w.contains('=')) {
        let (key, value) = text
            .split_once(char::is_whitespace)
            .ok_or_else(|| "expected KEY=VALUE or KEY VALUE".to_string())?;
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    list.into_iter()
        .map(|word| {
            word.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{word:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Splits at unquoted white space; double and single quotes group, a backslash escapes.
fn words(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".to_string());
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[&str]) -> ContainerConfig {
        let mut config = ContainerConfig {
            env: Some(vec!["PATH=/bin".to_string(), "A=old".to_string()]),
            working_dir: Some("/srv".to_string()),
            ..ContainerConfig::default()
        };
        for change in changes {
            apply_change(&mut config, change).unwrap();
        }
        config
    }

    #[test]
    fn env_replaces_existing_keys_and_keeps_order() {
        let config = applied(&["ENV A=new B='x y'", "env C hello world"]);
        assert_eq!(
            config.env.unwrap(),
            ["PATH=/bin", "A=new", "B=x y", "C=hello world"]
        );
    }

    #[test]
    fn workdir_user_expose_label_volume_and_stopsignal_are_applied() {
        let config = applied(&[
            "WORKDIR app",
            "USER 1000:1000",
            "EXPOSE 80 53/udp",
            "LABEL org.example=\"yes it is\"",
            r#"VOLUME ["/data"]"#,
            "STOPSIGNAL SIGINT",
        ]);
        assert_eq!(config.working_dir.as_deref(), Some("/srv/app"));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        let ports: Vec<_> = config.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(ports, ["53/udp", "80/tcp"]);
        assert_eq!(config.labels.unwrap()["org.example"], "yes it is");
        assert!(config.volumes.unwrap().contains_key("/data"));
        assert_eq!(config.stop_signal.as_deref(), Some("SIGINT"));
    }

    #[test]
    fn unknown_or_empty_instructions_are_refused_with_the_change_named() {
        let mut config = ContainerConfig::default();
        let err = apply_change(&mut config, "RUN rm -rf /").unwrap_err();
        assert!(err.to_string().contains("RUN is not supported"), "{err}");
        let err = apply_change(&mut config, "CMD").unwrap_err();
        assert!(err.to_string().contains("\"CMD\""), "{err}");
        assert!(apply_change(&mut config, "ENV A=\"open").is_err());
    }
}
