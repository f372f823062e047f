//! QEMU machine facts the measurements depend on: how `-m` sizes are parsed and
//! rounded (`hw/core/machine.c`, `qemu_opt_get_size` then 8 KiB alignment) and how
//! q35 splits guest RAM around the 4 GiB hole (`hw/i386/pc_q35.c`).

/// The q35 split of guest RAM: bytes below 4 GiB and bytes from 4 GiB up.
///
/// q35 keeps 2 GiB below 4 GiB when the guest has at least 2.75 GiB, otherwise all of
/// it (default `max-ram-below-4g`).
pub fn ram_split(memory: u64) -> (u64, u64) {
    let lowmem = if memory >= 0xb000_0000 {
        0x8000_0000
    } else {
        0xb000_0000
    };
    if memory >= lowmem {
        (lowmem, memory - lowmem)
    } else {
        (memory, 0)
    }
}

/// QEMU's `-m` rounding: RAM size is aligned up to 8 KiB.
pub fn qemu_ram_size(requested: u64) -> Option<u64> {
    requested.checked_add(8191).map(|v| v & !8191)
}

/// Parses a QEMU `-m` size: a number with an optional K/M/G/T suffix (default MiB).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(format!(
                        "memory size {s:?}: unknown suffix {c:?}; expected a number with an optional K/M/G/T suffix, like 2G or 4096M"
                    ))
                }
            };
            (t.get(..i).unwrap_or(""), mult)
        }
        _ => (t, 1 << 20),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("memory size {s:?}: expected a number with an optional K/M/G/T suffix, like 2G or 4096M"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("memory size {s:?} is too large"))?;
    if bytes == 0 {
        return Err(format!("memory size {s:?} must be positive"));
    }
    qemu_ram_size(bytes).ok_or_else(|| format!("memory size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q35_split() {
        assert_eq!(ram_split(2 << 30), (2 << 30, 0));
        assert_eq!(ram_split(0xafff_e000), (0xafff_e000, 0));
        assert_eq!(ram_split(0xb000_0000), (0x8000_0000, 0x3000_0000));
        assert_eq!(ram_split(8 << 30), (0x8000_0000, 6 << 30));
    }

    #[test]
    fn memory_sizes_parse_like_qemu() {
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("2048"), Ok(2 << 30));
        assert_eq!(parse_memory("4096m"), Ok(4 << 30));
        assert_eq!(parse_memory("1000k"), Ok(1_024_000));
        assert_eq!(parse_memory("1001k"), Ok(126 * 8192));
        assert!(parse_memory("0").is_err());
        assert!(parse_memory("2Q").is_err());
        assert!(parse_memory("x").is_err());
        assert!(parse_memory("99999999999T").is_err());
    }
}
