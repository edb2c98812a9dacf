//! What the image commands print: the `images` table (Docker's columns, sizes and ages) and
//! `image inspect` JSON.

use skiff_image::{Digest, ImageRecord, ImageStore, Reference, ResolvedImage};

/// An image id as `images` shows it: 12 hex digits, or the whole digest with `--no-trunc`.
pub fn id(config: &Digest, no_trunc: bool) -> String {
    if no_trunc {
        config.to_string()
    } else {
        config.short().to_string()
    }
}

/// The `images` table: REPOSITORY TAG [DIGEST] IMAGE ID CREATED SIZE.
pub fn render(
    store: &ImageStore,
    records: &[ImageRecord],
    no_trunc: bool,
    digests: bool,
) -> String {
    let mut header = vec!["REPOSITORY", "TAG"];
    if digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let now = now_secs();
    for record in records {
        let (repository, tag) = match Reference::parse(&record.name) {
            // A dangling image (a commit without a name) is recorded under its id.
            _ if record.name.starts_with("sha256:") => ("<none>".to_string(), "<none>".to_string()),
            Ok(r) => (
                r.familiar_repository(),
                r.tag.unwrap_or_else(|| "<none>".to_string()),
            ),
            Err(_) => (record.name.clone(), "<none>".to_string()),
        };
        let resolved = store.resolve_record(record).ok();
        let created = resolved
            .as_ref()
            .and_then(|i| i.config.created.as_deref())
            .and_then(parse_rfc3339)
            .map(|t| format!("{} ago", human_duration(now.saturating_sub(t))))
            .unwrap_or_else(|| "N/A".to_string());
        let size = resolved
            .as_ref()
            .map(|i| human_size(store.size(i)))
            .unwrap_or_else(|| "N/A".to_string());
        let mut row = vec![repository, tag];
        if digests {
            row.push(record.target.digest.to_string());
        }
        row.extend([id(&record.config, no_trunc), created, size]);
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}", width = widths[c] + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `docker image inspect`-shaped JSON for one image.
pub fn inspect_json(
    store: &ImageStore,
    image: &ResolvedImage,
) -> anyhow::Result<serde_json::Value> {
    let names = store.names_of(image.id())?;
    let familiar: Vec<Reference> = names
        .iter()
        .filter(|n| !n.starts_with("sha256:"))
        .filter_map(|n| Reference::parse(n).ok())
        .collect();
    let repo_tags: Vec<String> = familiar
        .iter()
        .filter(|r| r.tag.is_some())
        .map(Reference::familiar)
        .collect();
    let mut repo_digests: Vec<String> = familiar
        .iter()
        .map(|r| format!("{}@{}", r.familiar_repository(), image.record.target.digest))
        .collect();
    repo_digests.dedup();
    let config = &image.config_json;
    Ok(serde_json::json!({
        "Id": image.id().to_string(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Created": config.get("created").cloned().unwrap_or(serde_json::Value::Null),
        "Comment": config.get("comment").cloned().unwrap_or_else(|| "".into()),
        "Author": config.get("author").cloned().unwrap_or_else(|| "".into()),
        "Architecture": image.config.architecture,
        "Os": image.config.os,
        "Variant": image.config.variant,
        "Size": store.size(image),
        "Config": config.get("config").cloned().unwrap_or(serde_json::Value::Null),
        "RootFS": {
            "Type": "layers",
            "Layers": image.config.rootfs.diff_ids,
        },
        "Manifest": {
            "Digest": image.record.manifest.digest,
            "MediaType": image.record.manifest.media_type,
            "Layers": image.manifest.layers.iter().map(|l| serde_json::json!({
                "Digest": l.digest, "MediaType": l.media_type, "Size": l.size,
            })).collect::<Vec<_>>(),
        },
        "History": config.get("history").cloned().unwrap_or_else(|| serde_json::json!([])),
        "Snapshots": image.chain.iter().map(|c| store.snapshots().fs_path(c).display().to_string()).collect::<Vec<_>>(),
    }))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Docker's sizes: decimal units, three significant digits (`4.26MB`, `123kB`, `0B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// Docker's ages (`units.HumanDuration`).
pub fn human_duration(seconds: u64) -> String {
    let minutes = seconds / 60;
    let hours = (seconds + 1800) / 3600;
    match seconds {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-01T00:00:00Z`, fractions and
/// offsets allowed).
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => (time, "Z"),
    };
    let mut clock = clock.split(':');
    let hour: i64 = clock.next()?.parse().ok()?;
    let minute: i64 = clock.next()?.parse().ok()?;
    let second: i64 = clock.next()?.split('.').next()?.parse().ok()?;
    let offset_secs = match offset.as_bytes().first() {
        Some(b'+') | Some(b'-') => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (h, m) = offset[1..].split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
        _ => 0,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(77_900_000), "77.9MB");
        assert_eq!(human_size(123_456), "123kB");
        assert_eq!(human_size(2_000_000), "2MB");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(800 * 86_400), "2 years");
    }

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00.123+01:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
