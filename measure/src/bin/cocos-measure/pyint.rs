//! sev-snp-measure's argument syntax: Python `int()` literals (with `0x`/`0o`/`0b`
//! prefixes and `_` separators) and its VMM type names, reproduced exactly.

use anyhow::Result;

use cocos_measure::VmmType;

pub(crate) fn parse_vmm(s: &str) -> Result<VmmType, String> {
    VmmType::parse_loose(s).map_err(|e| e.to_string())
}

pub(crate) fn parse_u64_auto(s: &str) -> Result<u64, String> {
    let v = py_int(s, true)?;
    u64::try_from(v).map_err(|_| format!("'{s}' is out of range for an unsigned 64-bit value"))
}

/// Parses an integer as Python's `int(s)` (base 10) or `int(s, 0)` does: surrounding
/// whitespace, a sign, `_` between digits, and with `auto` a 0x/0o/0b prefix (a
/// decimal with a leading zero is refused, as Python refuses it).
pub(crate) fn py_int(s: &str, auto: bool) -> Result<i128, String> {
    let err = || format!("invalid integer '{s}'");
    let t = s.trim();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or_default()),
        Some(b'+') => (false, t.get(1..).unwrap_or_default()),
        _ => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = if auto && lower.starts_with("0x") {
        (
            16,
            lower.get(2..).unwrap_or_default().trim_start_matches('_'),
        )
    } else if auto && lower.starts_with("0o") {
        (
            8,
            lower.get(2..).unwrap_or_default().trim_start_matches('_'),
        )
    } else if auto && lower.starts_with("0b") {
        (
            2,
            lower.get(2..).unwrap_or_default().trim_start_matches('_'),
        )
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(err());
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if auto
        && radix == 10
        && clean.len() > 1
        && clean.starts_with('0')
        && clean.bytes().any(|b| b != b'0')
    {
        return Err(err());
    }
    let v = i128::from_str_radix(&clean, radix).map_err(|_| err())?;
    Ok(if neg { -v } else { v })
}

pub(crate) fn py_int_arg(name: &str, v: Option<&str>, auto: bool) -> Result<Option<i128>> {
    v.map(|s| py_int(s, auto).map_err(|e| anyhow::anyhow!("argument --{name}: {e}")))
        .transpose()
}

pub(crate) fn nonneg(name: &str, v: i128) -> Result<u64> {
    u64::try_from(v).map_err(|_| anyhow::anyhow!("--{name} must be between 0 and 2^64-1, got {v}"))
}

#[cfg(test)]
mod tests {
    use super::py_int;

    #[test]
    fn python_int_syntax() {
        assert_eq!(py_int("0x1f", true), Ok(31));
        assert_eq!(py_int(" 0X_1F ", true), Ok(31));
        assert_eq!(py_int("0b101", true), Ok(5));
        assert_eq!(py_int("0o17", true), Ok(15));
        assert_eq!(py_int("1_000", true), Ok(1000));
        assert_eq!(py_int("-3", false), Ok(-3));
        assert_eq!(py_int("000", true), Ok(0));
        assert!(py_int("010", true).is_err());
        assert_eq!(py_int("010", false), Ok(10));
        assert!(py_int("0x", true).is_err());
        assert!(py_int("1__0", true).is_err());
        assert!(py_int("0x10", false).is_err());
        assert!(py_int("", false).is_err());
    }
}
