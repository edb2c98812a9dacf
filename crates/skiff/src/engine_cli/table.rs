//! Docker's table layout (Go's tabwriter with minimum width 10 and padding 3) and the
//! columns of `ps`.

use skiff_engine::{Container, Status};

/// Lays out rows as `docker ps` does: every column but the last padded to its widest cell
/// plus three spaces (at least ten characters).
pub fn render(rows: &[Vec<String>]) -> String {
    render_min(rows, 10)
}

/// [`render`] with columns at least `min` characters wide (`docker top` uses 20).
pub fn render_min(rows: &[Vec<String>], min: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(min)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Docker's `Ellipsis`: at most `max` characters, the last one `…` when cut.
pub fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Docker's `units.HumanSize`: decimal units, four significant digits (`1.982MB`, `6B`), as
/// `system df` and the prune commands print sizes.
pub fn human_size(bytes: u64) -> String {
    human_size_precision(bytes, 4)
}

/// Docker's `units.HumanSizeWithPrecision`: decimal units, `digits` significant digits (the
/// network and block I/O of `stats` use three: `1.23kB`).
pub fn human_size_precision(bytes: u64, digits: usize) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    significant(value, digits, UNITS[unit])
}

/// `value` with `digits` significant digits (Go's `%.Ng`, trailing zeros dropped) and `unit`.
pub fn significant(value: f64, digits: usize, unit: &str) -> String {
    let whole = if value < 1.0 {
        1
    } else {
        value.log10().floor() as usize + 1
    };
    let decimals = digits.saturating_sub(whole);
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{unit}")
}

/// The STATUS column.
pub fn status(container: &Container) -> String {
    let s = &container.state;
    let since = |t: &str| skiff_engine::time::since(t).unwrap_or_else(|| "?".to_string());
    match container.status() {
        Status::Created => "Created".to_string(),
        Status::Running => format!("Up {}", since(&s.started_at)),
        Status::Restarting => format!("Restarting ({}) {} ago", s.exit_code, since(&s.finished_at)),
        Status::Exited => {
            if s.started_at == skiff_engine::time::ZERO_TIME {
                "Created".to_string()
            } else {
                format!("Exited ({}) {} ago", s.exit_code, since(&s.finished_at))
            }
        }
        Status::Removing => "Removal In Progress".to_string(),
    }
}

/// Docker's `ps` table.
pub const PS_FORMAT: &str = "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}";

/// The column titles of Docker's `ps` fields.
pub const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
];

/// Docker's `ps` fields of one container.
pub fn ps_document(container: &Container, no_trunc: bool) -> serde_json::Value {
    let c = &container.config;
    let command = c.argv().join(" ");
    let command = if no_trunc {
        command
    } else {
        ellipsis(&command, 20)
    };
    let never_started = container.state.started_at == skiff_engine::time::ZERO_TIME;
    let state = match container.status() {
        Status::Created => "created",
        Status::Exited if never_started => "created",
        Status::Running => "running",
        Status::Restarting => "restarting",
        Status::Exited => "exited",
        Status::Removing => "removing",
    };
    let mounts: Vec<String> = c
        .volumes
        .iter()
        .map(|v| ellipsis(&v.name, 15))
        .chain(c.binds.iter().map(|b| ellipsis(&b.source, 15)))
        .collect();
    let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let id = if no_trunc { &c.id[..] } else { &c.id[..12] };
    serde_json::json!({
        "ID": id,
        "Image": c.image,
        "Command": format!("{command:?}"),
        "CreatedAt": go_time(&c.created),
        "RunningFor": format!(
            "{} ago",
            skiff_engine::time::since(&c.created).unwrap_or_default()
        ),
        "Ports": "",
        "State": state,
        "Status": status(container),
        "Names": c.name,
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "Networks": serde_json::to_value(c.network)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    })
}

/// An RFC 3339 UTC time as Go prints a `time.Time`: `2006-01-02 15:04:05 +0000 UTC`.
fn go_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..19)) {
        (Some(date), Some(time)) if rfc3339.ends_with('Z') => format!("{date} {time} +0000 UTC"),
        _ => rfc3339.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_like_tabwriter() {
        let rows = vec![
            vec!["CONTAINER ID".into(), "IMAGE".into(), "NAMES".into()],
            vec!["0123456789ab".into(), "busybox".into(), "web".into()],
        ];
        assert_eq!(
            render(&rows),
            "CONTAINER ID   IMAGE     NAMES\n0123456789ab   busybox   web\n"
        );
    }

    #[test]
    fn sizes_have_four_significant_digits() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(6), "6B");
        assert_eq!(human_size(1_982_464), "1.982MB");
        assert_eq!(human_size(123_456), "123.5kB");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size_precision(1234, 3), "1.23kB");
    }

    #[test]
    fn creation_times_print_as_go_prints_them() {
        assert_eq!(
            go_time("2026-11-27T12:41:53.123456789Z"),
            "2026-11-27 12:41:53 +0000 UTC"
        );
    }

    #[test]
    fn long_commands_are_cut_with_an_ellipsis() {
        assert_eq!(ellipsis("sleep 100", 20), "sleep 100");
        assert_eq!(
            ellipsis("sh -c while true; do echo; done", 20),
            "sh -c while true; d…"
        );
    }
}
