//! Which TEE the guest runs in, and attestation reports through the kernel's
//! configfs-tsm interface (`/sys/kernel/config/tsm/report`, Linux 6.7+, both SEV-SNP
//! and TDX): create a report directory, write 64 bytes of report data to `inblob`,
//! read `outblob` (the SNP report or TDX quote), `auxblob` (SNP: the certificate table
//! with the VCEK, when the host provides one) and `provider`; for TDX also the CCEL
//! event log (`/sys/firmware/acpi/tables/data/CCEL`), which a verifier replays into the
//! RTMRs. Report data is SHA-512 of the manager's nonce. Without a TEE the agent says so
//! plainly instead of producing anything that looks like a report.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

/// The detected TEE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tee {
    /// AMD SEV-SNP guest.
    SevSnp,
    /// Intel TDX guest.
    Tdx,
    /// Neither.
    None,
}

impl Tee {
    /// The name used in events.
    pub fn name(self) -> &'static str {
        match self {
            Tee::SevSnp => "sev-snp",
            Tee::Tdx => "tdx",
            Tee::None => "none",
        }
    }
}

/// Detects the TEE from /proc/cpuinfo flags and guest device nodes under `root`
/// ("/" in the guest; a directory in tests).
pub fn detect(root: &Path) -> Tee {
    let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    if flags.contains(&"tdx_guest") || root.join("dev/tdx_guest").exists() {
        Tee::Tdx
    } else if flags.contains(&"sev_snp") || root.join("dev/sev-guest").exists() {
        Tee::SevSnp
    } else {
        Tee::None
    }
}

/// The report data bound into a report: SHA-512 of the nonce.
pub fn report_data(nonce: &[u8]) -> [u8; 64] {
    Sha512::digest(nonce).into()
}

/// An attestation result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// configfs-tsm provider ("sev_guest", "tdx_guest").
    pub provider: String,
    /// The report or quote.
    pub outblob: Vec<u8>,
    /// The report data that was requested.
    pub report_data: [u8; 64],
    /// configfs-tsm `auxblob` (SNP: certificate table), if any.
    pub auxblob: Option<Vec<u8>>,
    /// The TDX CCEL event log, if any.
    pub event_log: Option<Vec<u8>>,
}

/// The largest auxblob or event log passed on (a certificate table is a few KiB, a
/// CCEL log tens of KiB; an agent frame carries at most 1 MiB).
pub const MAX_AUX: u64 = 256 << 10;

/// Reads `path` if it exists, is non-empty and at most [`MAX_AUX`] bytes.
fn read_optional(path: &Path) -> Option<Vec<u8>> {
    let len = std::fs::metadata(path).ok()?.len();
    if len > MAX_AUX {
        return None;
    }
    std::fs::read(path)
        .ok()
        .filter(|b| !b.is_empty() && b.len() as u64 <= MAX_AUX)
}

/// The CCEL event log under `root` (`/` in the guest).
pub fn ccel(root: &Path) -> Option<Vec<u8>> {
    read_optional(&root.join("sys/firmware/acpi/tables/data/CCEL"))
}

/// Requests a report through configfs-tsm under `tsm` (normally
/// /sys/kernel/config/tsm/report), in a fresh directory named `name`.
pub fn configfs_report(tsm: &Path, name: &str, nonce: &[u8]) -> Result<Report, String> {
    if !tsm.is_dir() {
        return Err(format!(
            "{} does not exist: no configfs-tsm (needs Linux 6.7+, a TEE guest driver, and configfs mounted)",
            tsm.display()
        ));
    }
    let dir: PathBuf = tsm.join(name);
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = (|| {
        let rd = report_data(nonce);
        std::fs::write(dir.join("inblob"), rd).map_err(|e| format!("inblob: {e}"))?;
        let outblob = std::fs::read(dir.join("outblob")).map_err(|e| format!("outblob: {e}"))?;
        let provider = std::fs::read_to_string(dir.join("provider"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok(Report {
            provider,
            outblob,
            report_data: rd,
            auxblob: read_optional(&dir.join("auxblob")),
            event_log: None,
        })
    })();
    let _ = std::fs::remove_dir(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_from_flags_and_devices() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(
            d.path().join("proc/cpuinfo"),
            "processor: 0\nflags\t: fpu sse2 hypervisor\n",
        )
        .unwrap();
        assert_eq!(detect(d.path()), Tee::None);
        std::fs::write(d.path().join("proc/cpuinfo"), "flags\t: fpu tdx_guest\n").unwrap();
        assert_eq!(detect(d.path()), Tee::Tdx);
        std::fs::write(d.path().join("proc/cpuinfo"), "flags\t: fpu\n").unwrap();
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/sev-guest"), "").unwrap();
        assert_eq!(detect(d.path()), Tee::SevSnp);
    }

    #[test]
    fn configfs_flow() {
        let d = tempfile::tempdir().unwrap();
        assert!(configfs_report(&d.path().join("missing"), "r", b"n")
            .unwrap_err()
            .contains("configfs-tsm"));
        // A fake configfs that already holds the entry's files: the agent writes inblob
        // and reads outblob/provider, then removes its directory (which fails on a
        // plain directory with files, and that is ignored).
        let tsm = d.path().join("tsm");
        std::fs::create_dir(&tsm).unwrap();
        let r = configfs_report(&tsm, "r1", b"nonce");
        assert!(r.is_err(), "outblob missing on a plain directory");
        assert_eq!(report_data(b"nonce").len(), 64);
        assert_eq!(
            report_data(b"nonce"),
            <[u8; 64]>::from(Sha512::digest(b"nonce"))
        );
    }

    #[test]
    fn event_log_and_auxblob_are_optional_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ccel(d.path()), None);
        let dir = d.path().join("sys/firmware/acpi/tables/data");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("CCEL"), b"").unwrap();
        assert_eq!(ccel(d.path()), None, "an empty log is no log");
        std::fs::write(dir.join("CCEL"), b"events").unwrap();
        assert_eq!(ccel(d.path()).as_deref(), Some(&b"events"[..]));
        // A log larger than a frame can carry is left out rather than truncated.
        std::fs::write(dir.join("CCEL"), vec![0u8; MAX_AUX as usize + 1]).unwrap();
        assert_eq!(ccel(d.path()), None);
    }
}
