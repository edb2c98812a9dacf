//! Timestamps of the runtime's state records, in the form runc writes them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC), the form runc writes in `created`.
pub fn rfc3339_now() -> String {
    skiff_apimachinery::time::format_rfc3339_nanos(SystemTime::now())
}

/// Formats seconds and nanoseconds since the epoch as RFC 3339 UTC with nanoseconds.
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    skiff_apimachinery::time::format_rfc3339_nanos(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_correctly() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_704_067_200, 5), "2024-01-01T00:00:00.000000005Z");
        assert_eq!(
            rfc3339(951_782_400 + 3661, 0),
            "2000-02-29T01:01:01.000000000Z"
        );
    }
}
