//! Kubernetes quantities (`500m`, `64Mi`, `1.5`, `2e3`) as the numbers cgroups take.

/// The quantity in thousandths (CPU millicores), rounded up.
pub fn millis(text: &str) -> Option<u64> {
    scaled(text, 1000)
}

/// The quantity as a whole number (bytes), rounded up.
pub fn bytes(text: &str) -> Option<u64> {
    scaled(text, 1)
}

/// `text × factor`, rounded up; `None` when it does not parse or is negative.
fn scaled(text: &str, factor: u128) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (num, den): (u128, u128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        s if s.starts_with(['e', 'E']) => (10u128.checked_pow(s[1..].parse().ok()?)?, 1),
        _ => return None,
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{whole}{frac}");
    let mantissa: u128 = digits.parse().ok()?;
    let frac_den = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let top = mantissa.checked_mul(num)?.checked_mul(factor)?;
    let bottom = den.checked_mul(frac_den)?;
    u64::try_from(top.div_ceil(bottom)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_scale() {
        assert_eq!(millis("500m"), Some(500));
        assert_eq!(millis("1.5"), Some(1500));
        assert_eq!(millis("2"), Some(2000));
        assert_eq!(bytes("64Mi"), Some(64 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("0.5Ki"), Some(512));
        assert_eq!(bytes("x"), None);
        assert_eq!(bytes(""), None);
    }
}
