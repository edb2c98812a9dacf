//! `--user` resolved as Docker does: `name|uid[:group|gid]` looked up in the container's own
//! `/etc/passwd` and `/etc/group`, with the user's supplementary groups and home directory.

use crate::EngineError;

/// Who the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: the primary group, then (when the user was not given a group)
    /// the groups `/etc/group` lists the user in.
    pub additional_gids: Vec<u32>,
    /// Home directory (`/` when unknown), for `HOME`.
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user` (empty: root) against the contents of the container's `/etc/passwd` and
/// `/etc/group` (empty strings when the files are missing).
pub fn resolve(user: &str, passwd: &str, group: &str) -> Result<ResolvedUser, EngineError> {
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let user = if user.is_empty() { "0" } else { user };
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = users.iter().find(|e| e.name == user_part).or_else(|| {
        user_part
            .parse::<u32>()
            .ok()
            .and_then(|uid| users.iter().find(|e| e.uid == uid))
    });
    let (uid, mut gid, home, name) = match (entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.clone(), Some(e.name.clone())),
        (None, Ok(uid)) => (uid, 0, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(EngineError::InvalidArgument(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            )));
        }
    };
    let mut additional_gids = Vec::new();
    match group_part {
        Some(g) => {
            gid = match groups.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => g.parse().map_err(|_| {
                    EngineError::InvalidArgument(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
            };
        }
        None => {
            if let Some(name) = &name {
                additional_gids = groups
                    .iter()
                    .filter(|e| e.members.iter().any(|m| m == name) && e.gid != gid)
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    // The primary group is listed too, as containerd does (`id` then shows `groups=GID`).
    additional_gids.insert(0, gid);
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() {
            "/".to_string()
        } else {
            home
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nwww:x:33:33::/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root\nwww-data:x:33:\nnogroup:x:65534:\n";

    #[test]
    fn users_resolve_by_name_and_number() {
        let root = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.additional_gids, vec![0, 10]);
        let www = resolve("www", PASSWD, GROUP).unwrap();
        assert_eq!((www.uid, www.gid, www.home.as_str()), (33, 33, "/var/www"));
        let numeric = resolve("1234:5", PASSWD, GROUP).unwrap();
        assert_eq!(
            (numeric.uid, numeric.gid, numeric.home.as_str()),
            (1234, 5, "/")
        );
        let named_group = resolve("nobody:www-data", PASSWD, GROUP).unwrap();
        assert_eq!((named_group.uid, named_group.gid), (65534, 33));
        assert!(resolve("ghost", PASSWD, GROUP).is_err());
        assert!(resolve("0:ghosts", PASSWD, GROUP).is_err());
    }
}
