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

/// Parses a QEMU `-m` size: a number with an optional K/M/G/T suffix (default MiB), a
/// fraction allowed with a suffix (`1.5G`, as QEMU takes it). A bare number of a
/// mebibyte or more (2,147,483,648 would be 2 PiB) is refused as most likely meant in
/// bytes, with the suffix form to write instead; so is anything over 16 TiB.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    const MAX: u64 = 16 << 40;
    let t = s.trim();
    let usage = "expected a number with an optional K/M/G/T suffix, like 2G, 1.5G or 4096M";
    let (num, mult, suffixed) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("memory size {s:?}: unknown suffix {c:?}; {usage}")),
            };
            (t.get(..i).unwrap_or(""), mult, true)
        }
        _ => (t, 1 << 20, false),
    };
    let (whole, frac, dotted) = match num.split_once('.') {
        Some((w, f)) => (w, f, true),
        None => (num, "", false),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (dotted && (!digits(frac) || !suffixed)) {
        return Err(format!("memory size {s:?}: {usage}"));
    }
    let too_large = || format!("memory size {s:?} is too large (at most 16T)");
    let n: u64 = whole.parse().map_err(|_| too_large())?;
    if !suffixed && n >= 1 << 20 {
        let bytes = n;
        let hint = match bytes {
            b if b % (1 << 30) == 0 => format!("{}G", b >> 30),
            b if b % (1 << 20) == 0 => format!("{}M", b >> 20),
            _ => format!("{}K", bytes.div_ceil(1 << 10)),
        };
        return Err(format!(
            "memory size {s:?}: a bare number is MiB (QEMU's rule), so this is {} TiB; did you mean bytes? write {hint}",
            n >> 20
        ));
    }
    // The fraction, exactly: frac digits × mult / 10^len, truncated to whole bytes.
    let frac_bytes = if frac.is_empty() {
        0
    } else {
        let f: u128 = frac
            .get(..frac.len().min(18))
            .unwrap_or("0")
            .parse()
            .map_err(|_| too_large())?;
        let scale = 10u128.pow(frac.len().min(18) as u32);
        u64::try_from(f * u128::from(mult) / scale).map_err(|_| too_large())?
    };
    let bytes = n
        .checked_mul(mult)
        .and_then(|b| b.checked_add(frac_bytes))
        .filter(|b| *b <= MAX)
        .ok_or_else(too_large)?;
    if bytes == 0 {
        return Err(format!("memory size {s:?} must be positive"));
    }
    qemu_ram_size(bytes).ok_or_else(too_large)
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
        // Fractions with a suffix, as QEMU: 1.5G.
        assert_eq!(parse_memory("1.5G"), Ok(3 << 29));
        assert_eq!(parse_memory("0.5T"), Ok(1 << 39));
        assert!(parse_memory("1.5").is_err(), "a fraction needs a suffix");
        assert!(parse_memory("1.G").is_err());
        // A bare number meant as bytes: refused with the suffix form.
        let e = parse_memory("2147483648").unwrap_err();
        assert!(e.contains("did you mean bytes? write 2G"), "{e}");
        assert!(
            parse_memory("1048575").is_ok(),
            "just under a TiB in MiB is allowed"
        );
        assert!(parse_memory("17T").is_err(), "over 16T");
        assert_eq!(parse_memory("16T"), Ok(16 << 40));
    }
}
