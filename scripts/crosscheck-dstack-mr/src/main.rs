//! `crosscheck-dstack-mr`: TDX launch measurements computed by Dstack's `dstack-mr`
//! library, as an independent reference for cross-checking `cocos-measure tdx`.
//!
//! It prints one JSON object with MRTD, RTMR1, RTMR2 and, when QEMU's three ACPI
//! fw_cfg blobs are given, RTMR0 (else `null`), plus the list of assumptions that
//! `dstack-mr` bakes in (see README.md). dstack-mr computes RTMR0 from ACPI blobs
//! that it makes by running its patched QEMU (`dstack-acpi-tables`); this tool
//! instead hashes blobs you pass, through dstack-mr's public
//! `tdx_measurements_for_image_dir_with_acpi_hashes`, so no QEMU is needed.
//!
//! dstack-mr's public TDX entry points read an image directory with a
//! `metadata.json`; one is written to a temporary directory pointing at the
//! given files. Errors go to stderr with exit status 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use dstack_mr::tdx::{
    measured_kernel_cmdline, tdx_measurements_for_image_dir_with_acpi_hashes,
    tdx_measurements_for_image_dir_without_rtmr0, TdxRtmr0AcpiHashes,
};
use dstack_types::VmConfig;
use serde_json::{json, Value};
use sha2::{Digest, Sha384};

/// Commit of Dstack-TEE/dstack whose `dstack-mr` (0.6.0) this tool is built against.
const DSTACK_COMMIT: &str = "312dc605ebaaf93372534ffb135ea011533d28e9";
const DSTACK_MR_VERSION: &str = "0.6.0";

/// Compute TDX MRTD and RTMR0-2 with Dstack's dstack-mr.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TDVF/OVMF firmware image with TDX metadata (QEMU -bios)
    #[arg(long, value_name = "FILE")]
    firmware: PathBuf,
    /// Kernel bzImage (QEMU -kernel)
    #[arg(long, value_name = "FILE")]
    kernel: PathBuf,
    /// Initrd (QEMU -initrd); dstack-mr always measures one
    #[arg(long, value_name = "FILE")]
    initrd: PathBuf,
    /// Kernel command line as given to QEMU -append (must be non-empty);
    /// dstack-mr measures it with " initrd=initrd" appended
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    cmdline: String,
    /// Guest memory: bytes, or with a binary suffix K, M, G or T (2G = 2147483648)
    #[arg(long, value_name = "SIZE")]
    memory: String,
    /// vCPUs; recorded only (dstack-mr uses it solely to generate ACPI tables with QEMU)
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// QEMU's etc/acpi/tables blob (with --acpi-rsdp and --acpi-loader: RTMR0)
    #[arg(long, value_name = "FILE", requires_all = ["acpi_rsdp", "acpi_loader"])]
    acpi_tables: Option<PathBuf>,
    /// QEMU's etc/acpi/rsdp blob
    #[arg(long, value_name = "FILE", requires_all = ["acpi_tables", "acpi_loader"])]
    acpi_rsdp: Option<PathBuf>,
    /// QEMU's etc/table-loader blob
    #[arg(long, value_name = "FILE", requires_all = ["acpi_tables", "acpi_rsdp"])]
    acpi_loader: Option<PathBuf>,
    /// QEMU version X.Y.Z; 8.x selects two-pass MRTD (dstack-mr default: 9.1.0)
    #[arg(long, value_name = "X.Y.Z")]
    qemu_version: Option<String>,
    /// Force two-pass MRTD (all pages added, then extended, per section)
    #[arg(long, conflicts_with = "single_pass")]
    two_pass: bool,
    /// Force single-pass MRTD (add and extend page by page)
    #[arg(long)]
    single_pass: bool,
}

/// Parse a memory size: plain bytes, or a number with a K/M/G/T (1024-based) suffix.
fn parse_memory(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--memory {s:?}: expected bytes or a K/M/G/T size"))?;
    let bytes = n
        .checked_mul(mult)
        .with_context(|| format!("--memory {s:?} overflows"))?;
    if bytes == 0 {
        bail!("--memory must be greater than 0");
    }
    Ok(bytes)
}

fn absolute(path: &Path, what: &str) -> Result<String> {
    let p = std::fs::canonicalize(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !p.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    p.into_os_string()
        .into_string()
        .map_err(|p| anyhow::anyhow!("{what} path {p:?} is not UTF-8"))
}

fn sha384_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    let data =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(Sha384::digest(&data).to_vec())
}

/// What dstack-mr assumes about the launch, in words (see README.md for sources).
fn assumptions(two_pass: bool, rtmr0: bool) -> Vec<String> {
    let mut a = vec![
        format!(
            "MRTD: TDVF metadata sections measured with TDH.MEM.PAGE.ADD and 256-byte TDH.MR.EXTEND, {}",
            if two_pass {
                "two-pass (all pages of a section added, then extended; QEMU 8.x or forced)"
            } else {
                "single-pass (each page added then extended; QEMU >= 9 default)"
            }
        ),
        "RTMR1[0]: Authenticode SHA-384 of the kernel after QEMU's setup-header patch (QEMU < 10.2): \
         type_of_loader=0xb0, loadflags|=CAN_USE_HEAP, heap_end_ptr, cmd_line_ptr=0x20000, \
         ramdisk_image/ramdisk_size with the initrd page-aligned at the top of below-4G RAM \
         (q35: min(RAM, 2.75G), or 2G when RAM >= 2.75G) minus 0x28000 bytes of ACPI data; for boot \
         protocol >= 2.12 the cap is 4G-1 if xloadflags bit 0x40 is set, else 0x37ffffff (QEMU tests \
         XLF_CAN_BE_LOADED_ABOVE_4G = 0x02, else reads initrd_addr_max); a 0-byte initrd leaves \
         ramdisk_image/ramdisk_size unpatched (QEMU writes them)"
            .into(),
        "RTMR1[1..4]: fixed events 'Calling EFI Application from Boot Option', separator 00000000, \
         'Exit Boot Services Invocation', 'Exit Boot Services Returned with Success'"
            .into(),
        "RTMR2: exactly two events, as the Linux EFI stub (6.9+) logs them: the command line then the initrd"
            .into(),
        "RTMR2[0]: SHA-384 of '<cmdline> initrd=initrd' (suffix appended as edk2 before stable202508 does) \
         in UTF-16LE with a 2-byte NUL terminator"
            .into(),
        "RTMR2[0] encoding: the command line is transcoded from UTF-8 to UTF-16 (str::encode_utf16); OVMF widens \
         each byte to a CHAR16 (UnicodeSPrintAsciiFormat %a), so the two agree only for ASCII command lines"
            .into(),
        "RTMR2[1]: SHA-384 of the initrd file as given; an initrd is always assumed".into(),
        "cpus: not used by any register here (dstack-mr only passes it to QEMU to generate ACPI tables)".into(),
    ];
    if rtmr0 {
        a.extend([
            "RTMR0[0]: TD HOB rebuilt from TDVF TD_HOB/TEMP_MEM sections and RAM size (accepted ranges type 0, \
             the rest type 7; RAM >= 2.75G split at 2G with the rest above 4G)"
                .to_string(),
            "RTMR0[1]: fixed CFV (OVMF_VARS) digest 344bc51c...6790 of dstack's firmware, not computed from --firmware"
                .into(),
            "RTMR0[2..6]: SecureBoot, PK, KEK, db, dbx measured as empty variables (secure boot off, no keys)"
                .into(),
            "RTMR0[7]: separator 00000000".into(),
            "RTMR0[8..10]: ACPI blobs in the fixed order table-loader, rsdp, tables, whatever order the loader allocates them in"
                .into(),
            "RTMR0[11..12]: BootOrder = 0000 (SHA-384 of 00 00) and a fixed Boot0000 (OVMF UiApp) digest 23ada07f...c298; \
             pre-202505 OVMF layout, no fw_cfg items measured"
                .into(),
        ]);
    } else {
        a.push("RTMR0: not computed (needs --acpi-tables, --acpi-rsdp, --acpi-loader)".into());
    }
    a
}

fn run(cli: &Cli) -> Result<Value> {
    let memory = parse_memory(&cli.memory)?;
    if cli.cpus == 0 {
        bail!("--cpus must be greater than 0");
    }
    if cli.cmdline.trim().is_empty() {
        bail!("--cmdline must not be empty (dstack-mr requires an image command line)");
    }
    let firmware = absolute(&cli.firmware, "--firmware")?;
    let kernel = absolute(&cli.kernel, "--kernel")?;
    let initrd = absolute(&cli.initrd, "--initrd")?;

    let dir = tempfile::tempdir().context("cannot create a temporary image directory")?;
    let meta =
        json!({ "cmdline": cli.cmdline, "kernel": kernel, "initrd": initrd, "bios": firmware });
    std::fs::write(dir.path().join("metadata.json"), meta.to_string())
        .context("cannot write metadata.json")?;

    // dstack-types names this field "single pass" but dstack-mr feeds it to
    // `two_pass_add_pages`: Some(true) means two-pass.
    let two_pass_override = match (cli.two_pass, cli.single_pass) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let vm_config: VmConfig = serde_json::from_value(json!({
        "cpu_count": cli.cpus,
        "memory_size": memory,
        "qemu_version": cli.qemu_version,
        "qemu_single_pass_add_pages": two_pass_override,
    }))
    .context("cannot build dstack VmConfig")?;
    // The MRTD page order dstack-mr will pick (for the assumptions list).
    let two_pass = dstack_mr::Machine::builder()
        .cpu_count(cli.cpus)
        .memory_size(memory)
        .firmware(&firmware)
        .kernel(&kernel)
        .initrd(&initrd)
        .kernel_cmdline(&cli.cmdline)
        .maybe_two_pass_add_pages(two_pass_override)
        .maybe_qemu_version(cli.qemu_version.clone())
        .hugepages(false)
        .num_gpus(0)
        .num_nvswitches(0)
        .hotplug_off(false)
        .root_verity(true)
        .build()
        .versioned_options()
        .context("--qemu-version")?
        .two_pass_add_pages;

    let acpi = match (&cli.acpi_tables, &cli.acpi_rsdp, &cli.acpi_loader) {
        (Some(t), Some(r), Some(l)) => Some(TdxRtmr0AcpiHashes {
            tables: sha384_file(t, "--acpi-tables")?,
            rsdp: sha384_file(r, "--acpi-rsdp")?,
            loader: sha384_file(l, "--acpi-loader")?,
        }),
        _ => None,
    };

    let (mrtd, rtmr0, rtmr1, rtmr2) = match &acpi {
        Some(hashes) => {
            let m = tdx_measurements_for_image_dir_with_acpi_hashes(dir.path(), &vm_config, hashes)
                .context("dstack-mr failed")?;
            (m.mrtd, Some(hex(&m.rtmr0)), m.rtmr1, m.rtmr2)
        }
        None => {
            let m = tdx_measurements_for_image_dir_without_rtmr0(dir.path(), &vm_config)
                .context("dstack-mr failed")?;
            (m.mrtd, None, m.rtmr1, m.rtmr2)
        }
    };

    Ok(json!({
        "mrtd": hex(&mrtd),
        "rtmr0": rtmr0,
        "rtmr1": hex(&rtmr1),
        "rtmr2": hex(&rtmr2),
        "measured_cmdline": measured_kernel_cmdline(&cli.cmdline),
        "memory_bytes": memory,
        "cpus": cli.cpus,
        "dstack_mr": { "version": DSTACK_MR_VERSION, "commit": DSTACK_COMMIT },
        "assumptions": assumptions(two_pass, acpi.is_some()),
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            // --help / --version
            print!("{e}");
            return ExitCode::SUCCESS;
        }
    };
    match run(&cli) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
