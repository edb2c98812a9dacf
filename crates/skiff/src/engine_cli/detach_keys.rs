//! Docker's detach key sequences (`--detach-keys`, the `detachKeys` of the docker config
//! file): comma-separated keys, each a single character or `ctrl-<a-z|@|[|\|]|^|_>`; the
//! default is `ctrl-p,ctrl-q`. While the user types a prefix of the sequence the keys are held
//! back; the whole sequence detaches, anything else sends the held keys as typed.

/// ctrl-p ctrl-q.
pub const DEFAULT: &[u8] = &[0x10, 0x11];

/// The `ctrl-` names in the order of their codes (ctrl-@ is 0, ctrl-_ is 31).
const CTRL_NAMES: [&str; 32] = [
    "@", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
    "s", "t", "u", "v", "w", "x", "y", "z", "[", "\\", "]", "^", "_",
];

/// A key sequence that is not Docker's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDetachKeys {
    /// The sequence as given.
    pub spec: String,
}

impl std::fmt::Display for InvalidDetachKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Docker's daemon message.
        write!(f, "Invalid detach keys ({}) provided", self.spec)
    }
}

impl std::error::Error for InvalidDetachKeys {}

/// Parses a sequence such as `ctrl-p,ctrl-q` or `ctrl-x,a` into the bytes typed.
pub fn parse(spec: &str) -> Result<Vec<u8>, InvalidDetachKeys> {
    let invalid = || InvalidDetachKeys {
        spec: spec.to_string(),
    };
    let mut keys = Vec::new();
    for key in spec.split(',') {
        if key.len() == 1 {
            keys.push(key.as_bytes()[0]);
            continue;
        }
        let lower = key.to_ascii_lowercase();
        let name = lower.strip_prefix("ctrl-").ok_or_else(invalid)?;
        let code = CTRL_NAMES
            .iter()
            .position(|n| *n == name)
            .ok_or_else(invalid)?;
        keys.push(u8::try_from(code).map_err(|_| invalid())?);
    }
    Ok(keys)
}

/// The sequence to use: `flag` when given (and not empty), else the docker config file's `detachKeys`
/// (ignored when unreadable or invalid, as Docker does), else ctrl-p ctrl-q.
pub fn resolve(flag: Option<&str>) -> Result<Vec<u8>, InvalidDetachKeys> {
    if let Some(spec) = flag.filter(|s| !s.is_empty()) {
        return parse(spec);
    }
    let configured = skiff_image::registry::auth::docker_config_path()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|data| serde_json::from_slice::<serde_json::Value>(&data).ok())
        .and_then(|config| config.get("detachKeys")?.as_str().map(str::to_string));
    Ok(configured
        .and_then(|spec| parse(&spec).ok())
        .unwrap_or_else(|| DEFAULT.to_vec()))
}

/// Finds the detach sequence in typed input, across reads.
#[derive(Debug, Clone)]
pub struct Scanner {
    keys: Vec<u8>,
    /// How many keys of the sequence were typed last.
    matched: usize,
}

impl Scanner {
    /// A scanner for `keys` (an empty sequence never detaches).
    pub fn new(keys: Vec<u8>) -> Scanner {
        Scanner { keys, matched: 0 }
    }

    /// What of `data` to send now, and whether the user typed the whole sequence (what
    /// followed it is dropped, as Docker does).
    pub fn scan(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(data.len() + self.keys.len());
        if self.keys.is_empty() {
            return (data.to_vec(), false);
        }
        for &byte in data {
            if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            // The held keys were typed for the container after all.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if byte == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return (out, true);
                }
            } else {
                out.push(byte);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_parse_like_docker() {
        assert_eq!(parse("ctrl-p,ctrl-q").unwrap(), DEFAULT);
        assert_eq!(parse("ctrl-@,ctrl-a,ctrl-z").unwrap(), vec![0, 1, 26]);
        assert_eq!(
            parse("ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_").unwrap(),
            vec![27, 28, 29, 30, 31]
        );
        assert_eq!(parse("CTRL-X,a,,").unwrap_err().spec, "CTRL-X,a,,");
        assert_eq!(parse("CTRL-X,a").unwrap(), vec![24, b'a']);
        assert_eq!(parse("ctrl-x,q").unwrap(), vec![24, b'q']);
        assert_eq!(parse(",").unwrap_err().spec, ",");
        assert!(parse("ctrl-1").is_err());
        assert!(parse("ab").is_err());
        assert!(parse("").is_err());
        assert_eq!(
            parse("ctrl-").unwrap_err().to_string(),
            "Invalid detach keys (ctrl-) provided"
        );
    }

    #[test]
    fn the_sequence_is_found_across_reads() {
        let mut scanner = Scanner::new(DEFAULT.to_vec());
        assert_eq!(scanner.scan(b"ab"), (b"ab".to_vec(), false));
        assert_eq!(scanner.scan(b"x\x10"), (b"x".to_vec(), false));
        assert_eq!(scanner.scan(b"\x11rest"), (Vec::new(), true));
        // A ctrl-p followed by anything else is sent as typed.
        let mut scanner = Scanner::new(DEFAULT.to_vec());
        assert_eq!(
            scanner.scan(b"\x10a\x10\x10"),
            (b"\x10a\x10".to_vec(), false)
        );
        assert_eq!(scanner.scan(b"\x11"), (Vec::new(), true));
    }

    #[test]
    fn longer_and_single_key_sequences_detach() {
        let mut scanner = Scanner::new(parse("ctrl-x,a,b").unwrap());
        assert_eq!(scanner.scan(b"\x18a"), (Vec::new(), false));
        assert_eq!(scanner.scan(b"c"), (b"\x18ac".to_vec(), false));
        assert_eq!(scanner.scan(b"\x18\x18ab"), (b"\x18".to_vec(), true));
        let mut scanner = Scanner::new(parse("ctrl-d").unwrap());
        assert_eq!(scanner.scan(b"ls\x04x"), (b"ls".to_vec(), true));
        let mut never = Scanner::new(Vec::new());
        assert_eq!(never.scan(b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }
}
