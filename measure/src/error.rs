//! Error types of the measurement library. Every message names the problem and,
//! where there is one, what the user can do about it, on one line.

use std::path::PathBuf;

/// A firmware image that cannot be used as asked. `Clone` so that a parsed image can
/// keep the error of an optional structure (e.g. TDX metadata) for `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirmwareError {
    /// Smaller than a footer table.
    #[error("file is {size} bytes, too small to be an OVMF image (is it truncated?)")]
    TooSmall {
        /// Size of the file.
        size: usize,
    },
    /// Larger than the 4 GiB window it is mapped into.
    #[error("file is {size} bytes, larger than the 4 GiB window firmware is mapped into")]
    TooLarge {
        /// Size of the file.
        size: usize,
    },
    /// No footer GUID 32 bytes before the end.
    #[error(
        "no OVMF footer table (GUID 96b582de-1fb2-45f7-baea-a366c55a082d) before the last 32 \
         bytes: not an OVMF image built with SEV-ES/SNP/TDX support, or truncated (`cocos-measure \
         inspect` shows what an image supports)"
    )]
    NoFooterTable,
    /// The footer table is malformed.
    #[error("malformed OVMF footer table: {0}")]
    FooterTable(String),
    /// A table entry is shorter than the field it must carry.
    #[error("footer-table entry {name} has {len} data bytes, fewer than the 4 it must carry")]
    ShortEntry {
        /// Entry name.
        name: &'static str,
        /// Bytes of data present.
        len: usize,
    },
    /// Malformed "ASEV" metadata.
    #[error("malformed OVMF SEV metadata: {0}")]
    SevMetadata(String),
    /// Malformed "TDVF" metadata.
    #[error("malformed TDX metadata: {0}")]
    TdxMetadata(String),
    /// No SEV-ES reset block.
    #[error(
        "firmware has no SEV_ES_RESET_BLOCK (00f771de-1a7e-4fcb-890e-68c77e2fb44e): it cannot \
         start SEV-ES/SNP guests; use an OVMF built with SEV support (OvmfPkgX64 or AmdSevX64)"
    )]
    NoResetBlock,
}

/// Errors of the measurement functions.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The firmware file is not usable.
    #[error("{}: {source}", path.display())]
    FirmwareFile {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        source: FirmwareError,
    },
    /// The firmware is not usable (bytes given, no path).
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    /// SNP pages the firmware, so its size must be a multiple of 4 KiB.
    #[error("firmware size {size} is not a multiple of 4096: SEV-SNP maps it page by page")]
    FirmwareNotPageMultiple {
        /// Size of the image.
        size: usize,
    },
    /// A kernel was given but the firmware has no SNP_KERNEL_HASHES section.
    #[error(
        "a kernel was given but the firmware's SEV metadata has no SNP_KERNEL_HASHES section, so \
         QEMU's kernel-hashes=on cannot measure kernel/initrd/cmdline into an SNP launch; use an \
         OVMF built from OvmfPkg/AmdSev/AmdSevX64.dsc (scripts/build-ovmf.sh), or measure a \
         launch without a kernel"
    )]
    NoSnpKernelHashes,
    /// A kernel was given but the firmware reserves no hash table.
    #[error(
        "a kernel was given but the firmware has no SEV_HASH_TABLE_RV entry (or its GPA is 0), \
         so QEMU cannot measure kernel/initrd/cmdline; use an OVMF built from \
         OvmfPkg/AmdSev/AmdSevX64.dsc, or measure a launch without a kernel"
    )]
    NoSevHashTable,
    /// The hash table does not fit in its page.
    #[error(
        "SEV hash table at GPA {gpa:#x} (offset {offset:#x} in its page) does not fit in the \
         {size}-byte SNP_KERNEL_HASHES page"
    )]
    HashTableDoesNotFit {
        /// GPA of the table.
        gpa: u32,
        /// Offset in its page.
        offset: u32,
        /// Size of the section.
        size: u32,
    },
    /// SEV metadata section unusable for SNP.
    #[error("SEV metadata section {index} ({what}) cannot be measured: {why}")]
    BadSection {
        /// Index of the section.
        index: usize,
        /// Its type.
        what: String,
        /// Why.
        why: String,
    },
    /// Reset EIP 0 with application processors.
    #[error(
        "firmware's SEV-ES reset block gives AP reset EIP 0, so it cannot start {vcpus} vCPUs \
         (only 1); measure 1 vCPU or use a firmware with a valid reset block"
    )]
    NoApResetEip {
        /// vCPUs asked for.
        vcpus: u32,
    },
    /// vCPU count out of range.
    #[error("the vCPU count must be between 1 and {max}, got {got}")]
    BadVcpus {
        /// What was asked for.
        got: u64,
        /// Limit.
        max: u32,
    },
    /// Unknown vCPU type name.
    #[error("unknown vCPU type '{0}'; `cocos-measure vcpu-types` lists the known ones")]
    UnknownVcpuType(String),
    /// Unknown VMM type.
    #[error("unknown VMM type '{0}' (expected QEMU, ec2 or gce)")]
    UnknownVmm(String),
    /// Bad precalculated OVMF hash.
    #[error("a precomputed OVMF hash must be 96 hex digits (the SHA-384 launch digest after the firmware pages alone, as sev-snp-measure's snp:ovmf-hash mode prints it), got '{0}'")]
    BadOvmfHash(String),
    /// The kernel cannot be loaded as QEMU's direct boot would (TDX RTMR1).
    #[error("kernel: {0}")]
    Kernel(String),
    /// QEMU could not build the TD HOB for this firmware and memory size.
    #[error("TD HOB: {0}")]
    TdHob(String),
    /// The platform inputs for RTMR0 (ACPI blobs, EFI variables) are missing or bad.
    #[error("{0}")]
    Platform(String),
    /// The guest memory is too small for what must be placed in it (QEMU would refuse
    /// to start); the caller names its memory setting.
    #[error("{0}")]
    MemoryTooSmall(String),
}
