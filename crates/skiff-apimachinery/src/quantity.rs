//! Resource quantities as Kubernetes writes them (`100m`, `1.5`, `128Mi`, `1G`, `2e3`), read as
//! integers at a chosen scale: millicores for CPU, bytes for memory and storage.

/// The value of a quantity multiplied by `scale` (1000 for millicores, 1 for bytes), rounded
/// up; `None` when the text is not a quantity.
///
/// ```
/// use skiff_apimachinery::quantity::parse_scaled;
/// assert_eq!(parse_scaled("100m", 1000), Some(100));
/// assert_eq!(parse_scaled("1.5", 1000), Some(1500));
/// assert_eq!(parse_scaled("128Mi", 1), Some(128 << 20));
/// assert_eq!(parse_scaled("1G", 1), Some(1_000_000_000));
/// ```
pub fn parse_scaled(text: &str, scale: u64) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.starts_with('-') {
        return None;
    }
    let number = number.trim_start_matches('+');
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    // The number as a ratio mantissa / 10^frac_digits.
    let digits = format!("{whole}{frac}");
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut numerator = mantissa.checked_mul(u128::from(scale))?;
    let mut denominator: u128 = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let (mult, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with('e') || s.starts_with('E') => {
            let exp: u32 = s[1..].parse().ok()?;
            (10u128.checked_pow(exp)?, 1)
        }
        _ => return None,
    };
    numerator = numerator.checked_mul(mult)?;
    denominator = denominator.checked_mul(div)?;
    let value = numerator.div_ceil(denominator);
    u64::try_from(value).ok()
}

/// The quantity in thousandths (CPU millicores), rounded up.
pub fn millis(text: &str) -> Option<u64> {
    parse_scaled(text, 1000)
}

/// The quantity as a whole number (bytes), rounded up.
pub fn bytes(text: &str) -> Option<u64> {
    parse_scaled(text, 1)
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
        assert_eq!(bytes("+2"), Some(2));
        assert_eq!(bytes("-1"), None);
        assert_eq!(bytes("x"), None);
        assert_eq!(bytes(""), None);
    }
}
